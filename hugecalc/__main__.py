from hugecalc.cli import main

main()
