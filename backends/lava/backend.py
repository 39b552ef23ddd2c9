"""The Lava backend behind the one Backend interface, and the package's short entry points
(``lower``, ``run``, ``compile_graph``, ``load_artifact``), each a thin call into the shared
pipeline (:func:`snncc.runtime.lower`) and artifact code (:mod:`snncc.artifact`)."""
from __future__ import annotations

from pathlib import Path

from snncc.backends.base import Backend, Program
from snncc.backends.lava.execute import run_plan
from snncc.backends.lava.lowering import RULES, lower_float, requirements
from snncc.backends.lava.netx import NETX_FILE, netx_export, write_netx
from snncc.backends.lava.plan import FORMAT, LavaOptions, LavaPlan, LoweringError, Precision
from snncc.backends.lava.quantizer import attach_fixed
from snncc.artifact import compile_artifact, read_artifact
from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import Integrator
from snncc.runtime import lower as pipeline

__all__ = ["LavaBackend", "BACKEND", "lower", "run", "compile_graph", "load_artifact"]

# lava.json: what LavaPlan.to_json writes, what a fixed-point / netx artifact adds, the common header
_PLAN_KEYS = {"format", "graph", "precision", "run_config", "steps_per_sample", "max_depth", "source", "readout",
              "static_nodes", "graded_spikes", "graded_edges", "processes", "connections", "per_sample"}
_OPTIONAL_KEYS = {"quantization", "netx"}


class LavaBackend(Backend):
    name = "lava"
    Options = LavaOptions
    target_file = "lava.json"
    rules = RULES
    refuses = {Integrator: "Integrator: the Lava lowering has no non-spiking integrator (NIR LI / CubaLI / I: an analog "
                           "membrane readout); run the graph with --backend torch or numba"}

    def requirements(self, options: LavaOptions, deploy: bool = False):
        return requirements(options.graded_spikes)

    def lower(self, graph: SpikeGraph, options: LavaOptions) -> Program:
        plan = lower_float(graph, graded=options.graded_spikes)
        if options.fixed_point:
            attach_fixed(graph, plan)
        return Program(self.name, graph, options, plan)

    def run(self, program: Program, x, timesteps: int, record: bool = False, timing: dict | None = None):
        return run_plan(program.graph, program.plan, x, timesteps, record, timing)

    def describe(self, options: LavaOptions) -> dict:
        return {"precision": str(Precision.FIXED if options.fixed_point else Precision.FLOAT),
                "graded_spikes": bool(options.graded_spikes)}

    def label(self, options: LavaOptions) -> str:
        d = self.describe(options)
        return d["precision"] + (", graded spikes" if d["graded_spikes"] else "")

    # -- artifact: lava.json (the process graph), summary.txt, and model.net with netx -------
    def save(self, program: Program, folder) -> tuple:
        """lava.json carries "quantization" in fixed point, "graded_spikes"/"graded_edges";
        with the netx option the folder also holds model.net (:mod:`.netx`), described in
        lava.json "netx" and summary.txt (a graph netx cannot express is refused)."""
        graph, plan = program.graph, program.plan
        cfg = plan.to_json()
        text = graph.summary() + "\n\n" + plan.summary() + "\n"
        if program.options.netx:
            ex = netx_export(graph)
            cfg["netx"] = {"file": NETX_FILE, "layers": [lay["type"] for lay in ex.layers],
                           "reset_interval_extra": ex.hops, "reset_offset": ex.reset_offset,
                           "load": f"hdf5.Network(net_config='{NETX_FILE}', reset_interval=T + {ex.hops}, "
                                   f"reset_offset={ex.reset_offset})",
                           "quantization": ex.plan.fixed.to_json()}
            text += "\n" + ex.summary(NETX_FILE) + "\n" + ex.plan.fixed.summary().replace(
                "fixed-point quantisation", "netx quantisation (weight_exp 0, bias_exp 6)", 1) + "\n"
            write_netx(graph, Path(folder) / NETX_FILE, ex=ex)
        return cfg, text

    def check_target(self, config: dict, options: LavaOptions, path) -> None:
        for key in sorted(_PLAN_KEYS - set(config)):
            raise LoweringError(f"{path}: missing field {key!r}")
        for key in sorted(set(config) - _PLAN_KEYS - _OPTIONAL_KEYS):
            raise LoweringError(f"{path}: unknown field {key!r}")
        if config["format"] != FORMAT:
            raise LoweringError(f"{path}: field 'format' is {config['format']!r}, not an {FORMAT} process graph")
        if config["precision"] not in {p.value for p in Precision}:
            raise LoweringError(f"{path}: field 'precision' is {config['precision']!r} "
                                f"(one of {', '.join(p.value for p in Precision)})")
        if not isinstance(config["graded_spikes"], bool):
            raise LoweringError(f"{path}: field 'graded_spikes' is not true/false")
        if (config["precision"] == Precision.FIXED) != options.fixed_point:
            raise LoweringError(f"{path}: field 'precision' ({config['precision']}) contradicts options.fixed_point")
        if config["graded_spikes"] != options.graded_spikes:
            raise LoweringError(f"{path}: field 'graded_spikes' contradicts options.graded_spikes")
        if options.fixed_point and "quantization" not in config:
            raise LoweringError(f"{path}: missing field 'quantization' (precision fixed_pt)")
        if options.netx and "netx" not in config:
            raise LoweringError(f"{path}: missing field 'netx' (option netx)")


BACKEND = LavaBackend()


def lower(graph: SpikeGraph, options: LavaOptions | None = None) -> LavaPlan:
    """The pipeline (validate, then lower) for Lava; the LavaPlan. LoweringError: one line."""
    return pipeline(graph, BACKEND, options).plan


def run(graph, x, timesteps: int, record: bool = False, options: LavaOptions | None = None,
        timing: dict | None = None):
    """Run ``graph`` (a SpikeGraph lowered with ``options``, a (graph, LavaPlan) pair, or a
    Program) on Lava's CPU simulator; see :func:`.execute.run_plan`."""
    if isinstance(graph, Program):
        graph, plan = graph.graph, graph.plan
    elif isinstance(graph, tuple):
        graph, plan = graph
    else:
        plan = lower(graph, options)
    return run_plan(graph, plan, x, timesteps, record, timing)


def compile_graph(graph: SpikeGraph, out_dir, options: LavaOptions | None = None) -> Path:
    """Write a Lava artifact (graph.snn.onnx, lava.json, summary.txt[, model.net]) atomically."""
    return compile_artifact(graph, BACKEND, options, out_dir)


def load_artifact(out_dir):
    """(graph, lava.json dict) of a Lava artifact; LoweringError (one line) if bad."""
    prog = read_artifact(out_dir, expect=BACKEND.name)
    return prog.graph, prog.config
