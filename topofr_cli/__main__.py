"""`python -m topofr_cli ...` and `torchrun -m topofr_cli train ...` entry point."""

from topofr_cli.cli.app import main

if __name__ == "__main__":
    main()
