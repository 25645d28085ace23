from aprec.cli import main

main()
