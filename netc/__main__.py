from netc.cli import main

main()
