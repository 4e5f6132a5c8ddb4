"""Checks a strace log of the relay against the sandbox of a systemd unit:
every system call it made must pass the unit's SystemCallFilter= lines, and
every socket it created must be of a family in RestrictAddressFamilies=.
Systemd's groups (@system-service, ...) are expanded with
`systemd-analyze syscall-filter`, as systemd itself would.

usage: syscalls.py STRACE_LOG UNIT_FILE"""
import re
import subprocess
import sys


def groups():
    out = subprocess.run(["systemd-analyze", "syscall-filter"], check=True, capture_output=True, text=True).stdout
    table, current = {}, None
    for line in out.splitlines():
        if line.startswith("@"):
            current = table.setdefault(line.strip(), set())
        elif current is not None and line.strip() and not line.strip().startswith("#"):
            current.add(line.strip())
    return table


def expand(names, table, seen=None):
    seen = set() if seen is None else seen
    out = set()
    for name in names:
        if name.startswith("@"):
            if name in seen:
                continue
            seen.add(name)
            if name not in table:
                raise SystemExit(f"unknown syscall group {name}")
            out |= expand(table[name], table, seen)
        else:
            out.add(name)
    return out


def unit_settings(path, key):
    values = []
    for line in open(path):
        m = re.match(rf"\s*{key}\s*=\s*(.*)", line)
        if m:
            values.append(m.group(1).strip())
    return values


def main():
    trace, unit = sys.argv[1], sys.argv[2]
    table = groups()
    allowed = None
    for value in unit_settings(unit, "SystemCallFilter"):
        deny = value.startswith("~")
        names = expand(value.lstrip("~").split(), table)
        if deny:
            allowed = (allowed if allowed is not None else set()) - names
        else:
            allowed = names if allowed is None else allowed | names
    if allowed is None:
        raise SystemExit(f"{unit}: no SystemCallFilter=")
    families = set()
    for value in unit_settings(unit, "RestrictAddressFamilies"):
        families |= set(value.split())

    calls, used_families = {}, set()
    for line in open(trace):
        m = re.match(r"\s*(?:\d+\s+)?([a-z_0-9]+)\((.*)", line)
        if not m:
            continue  # signals, exits, "<... resumed>" halves
        name, args = m.groups()
        calls[name] = calls.get(name, 0) + 1
        if name in ("socket", "socketpair"):
            used_families.add(args.split(",")[0].strip())
    if not calls:
        raise SystemExit(f"{trace}: no system calls traced")
    # execve is the tracer's exec of the relay, done before the unit's filter applies.
    blocked = sorted(c for c in calls if c not in allowed and c != "execve")
    bad_families = sorted(used_families - families)
    print(f"  {len(calls)} distinct system calls, {sum(calls.values())} in all; "
          f"socket families {', '.join(sorted(used_families))}")
    if blocked:
        print(f"  blocked by SystemCallFilter=: {', '.join(blocked)}")
    if bad_families:
        print(f"  not in RestrictAddressFamilies=: {', '.join(bad_families)}")
    sys.exit(1 if blocked or bad_families else 0)


main()
