"""Small fakes of things only a running server provides (see each module)."""
