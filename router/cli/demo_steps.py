"""What ``hotspare demo`` prints: the addresses, then the walkthrough (pure text).

Rules:

1. Every command line starts with ``$ `` and works as printed in a NEW terminal (a
   fresh shell, nothing exported, any working directory): absolute paths, the
   ``hotspare`` command by its full path, the admin token read from the demo's own
   deployment file with ``-c FILE``. No secret is printed.
2. The steps follow the story in order, and each suggests only what makes sense at
   that point: look, crash server a, watch b take over, find the files on the spare,
   leave a file only a has, bring a back (as the spare), preview and run the failback,
   see that file in quarantine, bring b back.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from router.cli.demo_config import DemoPorts

__all__ = ["DemoFacts", "apps_only_banner", "walkthrough"]

# The file step 5 leaves on the dead a; step 9 finds it in quarantine.
LOCAL_FILE = "written-on-a.txt"


@dataclass(frozen=True)
class DemoFacts:
    base: Path
    ports: DemoPorts
    pids: dict[str, int]  # app server node -> pid
    hotspare: str  # the shell words that run hotspare, already quoted


def _q(path: Path) -> str:
    return shlex.quote(str(path))


def apps_only_banner(f: DemoFacts) -> str:
    p = f.ports
    return (
        f"demo app servers running (files in {f.base})\n"
        f"  app server a: http://127.0.0.1:{p.app_a}/   pid {f.pids['a']}\n"
        f"  app server b: http://127.0.0.1:{p.app_b}/   pid {f.pids['b']}\n"
        f"  stop or restart one: {f.hotspare} demo stop|kill|restart a|b --dir {_q(f.base)}\n"
        "Ctrl-C stops everything."
    )


def walkthrough(f: DemoFacts) -> str:
    p, base, hs = f.ports, f.base, f.hotspare
    config = _q(base / "hotspare.yaml")
    lib, page = f"http://127.0.0.1:{p.router}/", f"http://127.0.0.1:{p.admin}/"
    a_reports, b_reports = base / "a" / "jobs" / "reports", base / "b" / "jobs" / "reports"
    return f"""\
hotspare demo is running (files in {base})

  library, through the router   {lib}
  status page                   {page}
  app server a (active)         http://127.0.0.1:{p.app_a}/   pid {f.pids['a']}
  app server b (spare)          http://127.0.0.1:{p.app_b}/   pid {f.pids['b']}
  deployment file               {base / 'hotspare.yaml'}
  logs                          {base / 'logs'}

A failover and a failback, step by step. Each $ line works as is in a new terminal
(the commands read the admin token from the deployment file).

  1. Look. Open the library {lib} , log in (any name, password "library"),
     search for "dragon" and write a report: it lands in {a_reports}
     and the agents copy it to b at once. Open the status page {page}
     and ask the router:
     $ {hs} status -c {config}
  2. Crash server a: its app server and its agent die at once (SIGKILL, no warning):
     $ {hs} demo kill a --dir {_q(base)}
  3. Watch the status page: b is the active within a second or two, at a new epoch.
     Reload the library: b serves it (log in again: sessions are not replicated).
     $ {hs} status -c {config}
  4. See the files on the spare, now the active: your report is there.
     $ ls -l {_q(b_reports)}
  5. Pretend a wrote one more file just before it died, too late to be copied:
     $ echo 'written on a just before it died' > {_q(a_reports / LOCAL_FILE)}
  6. Restart server a exactly as the demo started it. It comes back as the spare (no
     automatic failback); its agent sets aside what only a has and mirrors b:
     $ {hs} demo restart a --dir {_q(base)}
  7. Preview the failback to a (a dry run changes nothing):
     $ {hs} switchover -c {config} --service library --to a --dry-run
  8. Fail back: a final sync brings a up to date, b's app server is stopped (fenced),
     a is the active again at the next epoch.
     $ {hs} switchover -c {config} --service library --to a
  9. See the quarantine: the file only a had was moved aside when a came back as the
     spare (never overwritten, never deleted), under the epoch at which a became the
     spare; b never got it.
     $ ls -R {_q(base / 'a' / 'jobs' / '.hotspare' / 'quarantine')}
 10. Bring b back as the spare, and the pair is whole again:
     $ {hs} demo restart b --dir {_q(base)}

Ctrl-C stops everything."""
