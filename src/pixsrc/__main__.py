from pixsrc.cli.app import main

main()
