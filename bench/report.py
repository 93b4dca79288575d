"""The table ``bench/run.py`` prints from its results (the JSON holds every figure)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def print_table(results: dict) -> None:
    table = Table("section", "figure", "baseline", "ratio", "target",
                  title=f"{results['set']} set, {results['sizes']} sizes, {results['machine']['device_name']}")
    (gpu_rows if results["set"] == "gpu" else cpu_rows)(table, results)
    console = Console()
    if not console.is_terminal:  # a log file: wide enough for a row a line
        console = Console(width=200)
    console.print(table)


def cpu_rows(table: Table, results: dict) -> None:
    for r in results.get("eval", []):
        table.add_row(f"eval {r['bits']} bits", f"{r['ours_all_metrics_s']} s, {r['ours_peak_mb']} MB",
                      f"{r['lineage_map50_loop_s']} s (loop, mAP@50 only)", f"{r['speedup']}×", r["target"])
    search_rows(table, results)
    for r in results.get("ann", []):
        if "index" not in r:
            table.add_row("ann", r["ann"], "", "", "")
            continue
        setting = ", ".join(f"{k}={v}" for k, v in r["params"].items())
        table.add_row(f"ann {r['index']} ({setting}), {r['items']:,} × {r['bits']} bits",
                      f"{r['queries_per_s']} q/s, recall@50 {r['recall@50']}, build {r['build_s']} s",
                      f"exact {r['exact_ours_queries_per_s']} q/s, faiss flat {r['faiss_flat_queries_per_s']} q/s",
                      f"{round(r['queries_per_s'] / r['exact_ours_queries_per_s'], 1)}×", f"peak {r['peak_rss_mb']} MB")
    if "tune" in results:
        tu = results["tune"]
        table.add_row(f"tune {tu['method']} {tu['bits']} bits, MIRFlickr shapes", f"{tu['trials_per_hour']} trials/hour",
                      f"{tu['trials']} trials ({tu['pruned']} pruned) in {tu['wall_s']} s", "", tu["target"])
    if "trainer" in results:
        t = results["trainer"]
        table.add_row("trainer epoch", f"{t['ours_epoch_s']} s",
                      f"{t['peer_epoch_s']} s (peer: dense BoW layer, unfused SGD, per-item loader)",
                      f"{t['speedup']}× ({t['speedup_loop_only']}× from the loader alone)", "")
    for r in results.get("stage2", []):
        table.add_row(f"stage 2, {r['bits']} bits, {r['config']}", f"{r['wall_s']} s ({r['epochs']} epochs)",
                      f"mAP@50 {r['map50_i2t']:.3f} / {r['map50_t2i']:.3f}", "", r["target"])
    for r in results.get("shallow", []):
        table.add_row(f"shallow {r['method']}, {r['bits']} bits, MIRFlickr shapes", f"fit {r['fit_s']} s",
                      f"eval {r['eval_s']} s, mAP@50 {r['map50'][0]:.3f} / {r['map50'][1]:.3f}", "", r["target"])
    stage1_rows(table, results)


def stage1_rows(table: Table, results: dict) -> None:
    for r in results.get("stage1", []):
        table.add_row(f"stage 1 {r['model']} from {r['images_from']} ({r['device']}, AMP {r['amp']})",
                      f"{r['pipeline_img_s']} img/s (steady {r['pipeline_steady_img_s']})",
                      f"{r['bare_forward_img_s']} img/s (bare forward, same batches)",
                      f"{r['ratio']} (steady {r['ratio_steady']})",
                      f"{r['target']}; shares {r['share']}")


def search_rows(table: Table, results: dict) -> None:
    for r in results.get("search", []):
        faiss = (f"{r['faiss_queries_per_s']} q/s (faiss {r['faiss_index']})" if "faiss_queries_per_s" in r
                 else r["faiss"])
        table.add_row(f"search {r['items']:,} × {r['bits']} bits, top-{r['k']}", f"{r['ours_queries_per_s']} q/s (ours, CPU)",
                      faiss, f"{r.get('ratio_ours_to_faiss', '–')}", "")


def gpu_rows(table: Table, results: dict) -> None:
    stage1_rows(table, results)
    for r in results.get("stage2", []):
        if r.get("summary"):
            table.add_row(f"default table: {r['table_runs']} runs", f"{r['table_minutes']} min",
                          f"30-trial studies: {r['studies_minutes_all_methods']} min for all methods", "", r["assumes"])
            continue
        epoch = f", an epoch {r['epoch_s']} s" if r["epoch_s"] is not None else ""
        quality = f"mAP@50 {r['map50'][0]:.3f} / {r['map50'][1]:.3f}" if r["measured"] else r["note"]
        table.add_row(f"stage 2 {r['method']}, {r['bits']} bits ({r['device']})",
                      f"{r['whole_run_s']} s{'' if r['measured'] else ' (predicted)'}{epoch}", quality, "",
                      f"{r['epochs']} epochs" if r["epochs"] else "fitted once")
    for r in results.get("eval", []):
        table.add_row(f"eval {r['items']:,} × {r['bits']} bits, all metrics (CPU)", f"{r['ours_cpu_all_metrics_s']} s",
                      f"{r['device_map50_only_s']} s (mAP@50 only, on {r['device']})",
                      f"{r['ratio_device_to_ours']}×", f"same mAP@50: {r['agree']}")
    search_rows(table, results)
