"""Process titles: 'prefork master …' and 'prefork worker 3 [gen 2] …' in ps and top."""

from .listeners import format_address


def set_title(server, role):
    """Name this process after the server, e.g. 'prefork worker 2 [gen 1] MyServer 127.0.0.1:8000'."""
    # Imported here: `import prefork as socketserver` must not need setproctitle.
    import setproctitle

    setproctitle.setproctitle(
        f"{server.proc_name} {role} {type(server).__name__} {format_address(server.server_address)}")
