"""Bridges to other tools' stores (MLflow): read through their own clients into the version graph, and
written back out.  Built on the version APIs, like :mod:`veml.lifecycle`; the other tool's library is
imported only by the command that needs it, never at ``import veml``."""
