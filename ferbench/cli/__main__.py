from ferbench.cli import main

main()
