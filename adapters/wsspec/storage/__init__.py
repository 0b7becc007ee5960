"""Storage backends for the wsspec server.

``wsspec.storage.peewee`` holds the Peewee backend (SQLite and PostgreSQL). Nothing is
imported here, so that importing one backend never imports another's driver.
"""
