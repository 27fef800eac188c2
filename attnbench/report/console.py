"""Plain-text rendering of a results dict (the CLI prints it; library code only logs)."""
from __future__ import annotations

from typing import Any


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    if isinstance(x, int) and abs(x) >= 10_000:
        return f"{x:,}"
    return str(x)


def table(rows: list[dict], cols: list[str]) -> str:
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.rjust(w) for v, w in zip(vals, widths))  # noqa: E731
    return "\n".join([line(cols), line(["-" * w for w in widths])] + [line(r) for r in cells])


def format_results(res: dict) -> str:
    m = res.get("model", {})
    out = [f"variant: {res.get('variant')}   status: {res.get('status')}"]
    if res.get("error"):
        out.append(f"error: {res['error']}")
    if m:
        comp = ", ".join(f"{k} {_fmt(v)}" for k, v in m.get("params_by_component", {}).items())
        out.append(f"params: {_fmt(m.get('params'))} (non-embedding {_fmt(m.get('non_embedding_params'))}; {comp})")
        out.append(f"KV cache: {_fmt(m.get('kv_cache_bytes_per_token'))} bytes/token   "
                   f"FLOPs/token: fwd {_fmt(m.get('flops_per_token_fwd'))}, train {_fmt(m.get('flops_per_token_train'))}"
                   f" (T={m.get('flops_seq_len')})")
    if res.get("bench"):
        cols = ["mode", "batch_size", "seq_len", "status", "median_ms", "p10_ms", "p90_ms", "tokens_per_s",
                "peak_mem_bytes", "mfu"]
        e = res.get("env", {})
        out += ["", f"bench on {e.get('device')} ({e.get('device_name')}), torch {e.get('torch')}, "
                    f"{e.get('threads')} threads, {e.get('dtype')}; peak {_fmt(e.get('peak_flops'))} FLOP/s "
                    f"({e.get('peak_flops_source')}); memory: {e.get('memory_method')}"]
        cols += [c for c in ("compile_s", "sdpa_backend") if any(r.get(c) is not None for r in res["bench"])]
        out += ["", table(res["bench"], cols)]
        out += [f"{r['mode']} T={r['seq_len']}: {r['status']}: {r['reason']}" for r in res["bench"] if r.get("reason")]
    tr = res.get("train")
    if tr:
        keys = ["status", "steps", "tokens_per_s", "train_loss", "val_loss", "metric_name", "metric"]
        out += ["", "train: " + "  ".join(f"{k}={_fmt(tr.get(k))}" for k in keys)]
        if tr.get("val_loss_by_len"):
            out.append("val_loss_by_len: " + ", ".join(f"{k}: {_fmt(v)}" for k, v in tr["val_loss_by_len"].items()))
        if tr.get("sample"):
            out += ["sample:", tr["sample"]]
    return "\n".join(out)
