"""The ``unitls`` command line tool's subcommands (entry point: ``unitls.__main__.main``)."""
