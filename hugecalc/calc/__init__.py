"""Pure calculations, one module per domain.  No click, rich or YAML here; nothing from the host."""
