"""Who the workers run as: the user and group settings, resolved and dropped to.

The master keeps its identity -- it binds, and re-binds on a reload -- and
each worker drops to the user and group right after the fork, before it
loads the application (unless preloaded), as gunicorn and nginx do.
"""

import grp
import os
import pwd


class Identity:
    """A resolved user/group: uid, gid and the user's supplementary groups.

    user and group are names or numbers (as strings or ints); group defaults
    to the user's primary group.  An unknown one raises ValueError naming it.
    """

    def __init__(self, user, group=None):
        self.user = user
        self.uid, name, primary_gid = _lookup_user(user)
        self.gid = _lookup_group(group) if group is not None else primary_gid
        self.groups = _supplementary_groups(name, self.gid)
        if os.geteuid() != 0 and (self.uid, self.gid) != (os.geteuid(), os.getegid()):
            raise ValueError(f"user {user!r}: only root can run workers as another user")

    def drop(self):
        """Become this identity, for good (groups first: setuid ends the right to)."""
        if os.geteuid() == self.uid and os.getegid() == self.gid:
            return
        os.setgroups(self.groups)
        os.setgid(self.gid)
        os.setuid(self.uid)

    def __repr__(self):
        return f"<Identity uid={self.uid} gid={self.gid} groups={self.groups}>"


def identity(user, group):
    """The Identity for the user/group settings; None if both are unset."""
    if user is None and group is None:
        return None
    if user is None:
        user = os.getuid()
    return Identity(user, group)


def _lookup_user(user):
    try:
        entry = pwd.getpwuid(int(user)) if str(user).isdigit() else pwd.getpwnam(user)
    except KeyError:
        if str(user).isdigit():  # a uid with no name: no supplementary groups
            return int(user), None, os.getgid()
        raise ValueError(f"user {user!r}: no such user") from None
    return entry.pw_uid, entry.pw_name, entry.pw_gid


def _lookup_group(group):
    if str(group).isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ValueError(f"group {group!r}: no such group") from None


def _supplementary_groups(name, gid):
    if name is None:
        return [gid]
    return sorted(set(os.getgrouplist(name, gid)))
