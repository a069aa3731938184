"""The machine: the one seam to the running kernel (``kernelfs``, every read and write of /proc and
/sys), the capture document (``capture``), reading a machine into one (``snapshot``), the
``Restorer`` every setting change goes through (``restore``), and the experiments' child process
(``_probe``)."""
