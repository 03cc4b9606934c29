"""Tools of the pure engine: grouped array operations, instants and durations, CSV cells.

numpy, pandas and pyarrow only: no Flask, no database."""
