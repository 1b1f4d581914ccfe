"""`python -m modeling_peterrec.reproduction`, the same as `peterrec reproduce`."""

from .cli import main

if __name__ == "__main__":
    main()
