from varexp.cli import main

main()
