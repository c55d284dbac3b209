"""``python -m softclass`` runs the command line (also under torchrun)."""

from softclass.cli import main

if __name__ == "__main__":
    main()
