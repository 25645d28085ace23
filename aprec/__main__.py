from aprec.app.cli import main

main()
