"""Runs a command and records what it and all its descendants used (Linux only):

- the peak of their summed resident memory, sampled every 100 ms from /proc, as
  `rss_kib`. `time -v` reports only the largest single process, which undercounts a tool
  made of many worker processes.
- their CPU seconds, from a cgroup-v1 cpuacct group made for the run, as `cpu_secs`.
  `time -v` misses processes that exit without being waited for; the cgroup counts every
  process started inside it. Without a writable cpuacct hierarchy, `cpu_secs` is absent.

    python3 benches/measure.py OUT_FILE -- COMMAND [ARGS...]

Writes `name value` lines to OUT_FILE and exits with the command's status.
"""
import os
import subprocess
import sys
import time


def children_by_parent():
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                # The command name may contain spaces, so split after its closing bracket.
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry))
    return parents


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_kib(root):
    parents = children_by_parent()
    total, pending = 0, [root]
    while pending:
        pid = pending.pop()
        total += rss_kib(pid)
        pending.extend(parents.get(pid, []))
    return total


CPUACCT = "/sys/fs/cgroup/cpuacct"


def make_cpu_group():
    """Returns a new cpuacct group's directory, or None where none can be made."""
    group = f"{CPUACCT}/paperclip-bench-{os.getpid()}"
    try:
        os.mkdir(group)
    except OSError:
        return None
    return group


def main():
    out_file, separator, command = sys.argv[1], sys.argv[2], sys.argv[3:]
    if separator != "--" or not command:
        sys.exit("usage: measure.py OUT_FILE -- COMMAND [ARGS...]")
    group = make_cpu_group()

    def join_group():
        if group:
            with open(f"{group}/cgroup.procs", "w") as procs:
                procs.write(str(os.getpid()))

    process = subprocess.Popen(command, preexec_fn=join_group)
    peak = 0
    while process.poll() is None:
        peak = max(peak, tree_rss_kib(process.pid))
        time.sleep(0.1)

    with open(out_file, "w") as out:
        out.write(f"rss_kib {peak}\n")
        if group:
            with open(f"{group}/cpuacct.usage") as usage:
                out.write(f"cpu_secs {int(usage.read()) / 1e9}\n")
            os.rmdir(group)
    sys.exit(process.returncode)


if __name__ == "__main__":
    main()
