"""`python -m sparsebias`, which is how torchrun starts it: torchrun -m sparsebias compress ..."""

from .cli import main

main(prog_name="sparsebias")
