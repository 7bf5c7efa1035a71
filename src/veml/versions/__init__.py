"""The version-management modules: one API per kind of version, built on the store interfaces."""
