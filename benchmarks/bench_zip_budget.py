"""Peak memory of the Batch page fed several ZIPs of highly compressible data, with reruns.

Claim: several ZIPs of one upload share one decompression budget, and a rerun (a slider
move) does not expand a ZIP again. Before, the budget was per ZIP and every rerun expanded
every ZIP: four 2 MB ZIPs took the server from 1.2 to 3.2 GB, again on each slider move.

Method: four ZIPs are built in memory, each ~2 MB holding ~480 MiB uncompressed (four
members of 120 MiB of one repeated byte, plus 1.5 MiB of random bytes so the ZIP has the
reported size). Each scenario runs in a fresh Python process, on the Batch page itself
(``pages/2_Batch.py`` through Streamlit's ``AppTest``, on the tiny seeded models of
``tests/app/test_pages.py``): upload, then ``--reruns`` moves of the opacity slider. The
process's peak resident set size (``ru_maxrss``) minus its RSS just before the upload is
the page's peak; member expansions are counted by wrapping ``zipfile.ZipFile.open``.

* ``baseline``: one of the ZIPs expanded once with plain :mod:`zipfile` (all members read
  into memory), no page. Every ratio is against this peak, measured in the same run.
* ``one_zip``: the Batch page with one ZIP (under the budget), then the reruns.
* ``four_zips``: the Batch page with the four ZIPs in one upload, then the reruns.

``--repo`` runs the pages and package of another checkout (e.g. an export of the commit
before the change: ``git archive <commit> | tar -x -C /tmp/old``), so before and after are
measured by the same script.

Usage::

    python benchmarks/bench_zip_budget.py [--reruns 3] [--repo PATH]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
MEMBERS, MEMBER_MIB, RANDOM_MIB = 4, 120, 1.5


def build_zip(seed: int) -> bytes:
    """~2 MB ZIP of ``MEMBERS`` x ``MEMBER_MIB`` MiB of one byte + ``RANDOM_MIB`` MiB of noise."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for i in range(MEMBERS):
            zf.writestr(f"series/slice_{i}.dcm", bytes([seed * 16 + i]) * (MEMBER_MIB * 2**20))
        zf.writestr("series/noise.bin", os.urandom(int(RANDOM_MIB * 2**20)))
    return buf.getvalue()


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def peak_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def count_expansions() -> list[int]:
    """Wrap ``zipfile.ZipFile.open`` (every member read goes through it); returns the counter."""
    count = [0]
    real = zipfile.ZipFile.open

    def counting(self, name, mode="r", *args, **kwargs):
        if mode == "r":
            count[0] += 1
        return real(self, name, mode, *args, **kwargs)

    zipfile.ZipFile.open = counting
    return count


def scenario(name: str, repo: Path, reruns: int) -> dict:
    """Run one scenario in this process; returns its measurements (KiB)."""
    zips = [(f"set{i}.zip", build_zip(i)) for i in range(4 if name == "four_zips" else 1)]
    if name == "baseline":
        start = rss_kib()
        with zipfile.ZipFile(io.BytesIO(zips[0][1])) as zf:
            members = [zf.read(info) for info in zf.infolist()]
        return {"start_kib": start, "peak_kib": peak_kib(), "expanded_mib": sum(map(len, members)) / 2**20}

    sys.path[:0] = [str(repo), str(repo / "tests" / "app")]
    from streamlit.testing.v1 import AppTest
    from test_pages import make_weights

    os.environ["MEDCNN_WEIGHTS_DIR"] = str(make_weights(Path(tempfile.mkdtemp(prefix="bench_zip_"))))
    at = AppTest.from_file(str(repo / "pages" / "2_Batch.py"), default_timeout=600)
    at.run()
    count = count_expansions()
    start = rss_kib()
    at.file_uploader[0].set_value([(n, d, "application/zip") for n, d in zips]).run()
    runs = [{"expansions": count[0], "rss_kib": rss_kib()}]
    for i in range(reruns):
        at.slider(key="batch_opacity").set_value(round(0.1 + 0.2 * i, 2)).run()
        runs.append({"expansions": count[0] - sum(r["expansions"] for r in runs), "rss_kib": rss_kib()})
    return {"start_kib": start, "peak_kib": peak_kib(), "runs": runs, "exception": [str(e.value) for e in at.exception],
            "errors": [e.value for e in at.error], "table_rows": sum(len(d.value) for d in at.dataframe),
            "zip_mib": [round(len(d) / 2**20, 2) for _, d in zips]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reruns", type=int, default=3)
    ap.add_argument("--repo", type=Path, default=HERE, help="checkout whose pages and package run")
    ap.add_argument("--scenario", help=argparse.SUPPRESS)
    args = ap.parse_args()
    repo = args.repo.resolve()
    if args.scenario:
        print(json.dumps(scenario(args.scenario, repo, args.reruns)))
        return

    out = {}
    for name in ("baseline", "one_zip", "four_zips"):
        proc = subprocess.run([sys.executable, __file__, "--scenario", name, "--repo", str(repo),
                               "--reruns", str(args.reruns)], capture_output=True, text=True, cwd=repo,
                              env={**os.environ, "PYTHONPATH": str(repo)})
        if proc.returncode:
            raise SystemExit(f"{name} failed:\n{proc.stderr[-4000:]}")
        out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    base = (out["baseline"]["peak_kib"] - out["baseline"]["start_kib"]) / 1024
    print(f"repo: {repo}")
    print(f"baseline: one ZIP ({out['baseline']['expanded_mib']:.0f} MiB uncompressed) expanded once: "
          f"peak +{base:.0f} MiB")
    summary = {"baseline_peak_mib": round(base)}
    for name in ("one_zip", "four_zips"):
        r = out[name]
        peak = (r["peak_kib"] - r["start_kib"]) / 1024
        held = [round((x["rss_kib"] - r["start_kib"]) / 1024) for x in r["runs"]]
        expansions = [x["expansions"] for x in r["runs"]]
        print(f"{name}: ZIPs of {r['zip_mib']} MB; peak +{peak:.0f} MiB = {peak / base:.2f}x baseline; "
              f"RSS held after upload and each rerun (MiB): {held}; member expansions per run: {expansions}; "
              f"{r['table_rows']} table rows; errors shown: {r['errors'] or 'none'}"
              + (f"; EXCEPTION {r['exception']}" if r["exception"] else ""))
        summary[name] = {"peak_mib": round(peak), "ratio_vs_baseline": round(peak / base, 2), "held_mib": held,
                         "expansions_per_run": expansions}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
