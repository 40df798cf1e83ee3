"""styleprefs: learn a person's own version of an artistic style from the pictures they pick."""

__version__ = "0.1.0"
