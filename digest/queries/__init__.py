"""Every read and write of the database, as named functions, one module per table family.

Nothing outside this package builds SQL; the pure stages never see a session.
"""
