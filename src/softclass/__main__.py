"""``python -m softclass`` runs the command line (also under torchrun)."""

from softclass.cli import script_main

if __name__ == "__main__":
    script_main()
