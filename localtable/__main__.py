from localtable.cli import main

main()
