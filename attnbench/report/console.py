"""Plain-text rendering of a results dict (the CLI prints it; library code only logs)."""
from __future__ import annotations

from ..track import catalogue
from .format import fmt as _fmt
from .format import peak_mem_cell, text_table


def table(rows: list[dict], cols: list[str]) -> str:
    """Plain-text table, every column right-aligned (bench rows, benchmark scripts)."""
    return text_table(rows, cols, cell=_fmt)


def format_results(res: dict) -> str:
    m = res.get("model", {})
    out = [f"variant: {res.get('variant')}   status: {res.get('status')}"]
    if res.get("error"):
        out.append(f"error: {res['error']}")
    if m:
        comp = ", ".join(f"{k} {_fmt(v)}" for k, v in m.get("params_by_component", {}).items())
        out.append(f"params: {_fmt(m.get('params'))} (non-embedding {_fmt(m.get('non_embedding_params'))}; {comp})")
        state = f" + {_fmt(m['recurrent_state_bytes'])} bytes of state/sequence" if m.get("recurrent_state_bytes") else ""
        out.append(f"KV cache: {_fmt(m.get('kv_cache_bytes_per_token'))} bytes/token{state}   "
                   f"FLOPs/token: fwd {_fmt(m.get('flops_per_token_fwd'))}, train {_fmt(m.get('flops_per_token_train'))}"
                   f" (T={m.get('flops_seq_len')})")
    if res.get("bench"):
        cols = ["mode", "batch_size", "seq_len", "status", *(f.name for f in catalogue.BENCH if f.name != "seq_len")]
        e = res.get("env", {})
        out += ["", f"bench on {e.get('device')} ({e.get('device_name')}), torch {e.get('torch')}, "
                    f"{e.get('threads')} threads, {e.get('dtype')}; peak {_fmt(e.get('peak_flops'))} FLOP/s "
                    f"({e.get('peak_flops_source')}); memory: {e.get('memory_method')}"]
        cols += [c for c in ("compile_s", "sdpa_backend") if any(r.get(c) is not None for r in res["bench"])]
        rows = [{**r, "peak_mem_bytes": peak_mem_cell(r)} for r in res["bench"]]  # "<64 KiB": below resolution
        out += ["", table(rows, cols)]
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
