"""Model families (transition: the old dataclass registry until the family packages land)."""

from lvjax.families._old import Family, family_by_name, family_for  # noqa: F401
