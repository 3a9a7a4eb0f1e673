"""Queue-time planning: what runs in the cloud, what runs here, what is refused. Pure: no I/O.

model.py holds the plan's types and its serialised form, graph.py the prompt's vocabulary and link helpers,
passes.py the planner (``make_plan``), cloud_prompt.py the cloud part's own prompt, kinds.py the one table of the
files loaders read and output nodes show.

The rules are DESIGN.md's "What goes to the cloud, exactly"; the cases a user hits are decided here:

* Node ids are opaque strings (``"12:5"`` from subgraphs is fine); ids the plan adds start ``gpugeek_``.
* Region R(G): every node reachable upstream from G's linked image/mask inputs, not walking through
  boundaries (``GPUGeekUploadImage`` nodes and other gateways). A gateway input linked straight to a
  boundary is passed through (no cloud work for it).
* An output node (OUTPUT_NODE, or a node of a class not installed locally that nothing consumes) whose
  linked inputs all come from one region joins it; its files come back.
* Crossings in come only from boundaries: IMAGE/MASK travel as uploads read by a cloud LoadImage /
  LoadImageMask; STRING/INT/FLOAT/BOOLEAN are written in as literals at run time.
* Crossings out (a region node feeding a local node other than its gateway): IMAGE/MASK are served from
  the cloud results through a free image/mask output of the gateway (refused when none is free);
  STRING/INT/FLOAT/BOOLEAN made of plain values only (a primitive seed or text, and values computed from
  such) run here as well ("both"); a value computed from cloud work, and any other type, is refused.
* Two cloud gateways whose regions share nodes and that run in the same place (workflow id and target)
  are merged into one cloud task, run by the first of them (by id); the others take their images from
  that task, so the shared part is paid once.
* A gateway set to run here (``run_on = local``) leaves its region local and passes its inputs through.
* Refused: a gateway with nothing linked; a link to a node that does not exist; a cycle in the cloud part;
  a wrong type on a gateway input; a crossing of any other type (LATENT, MODEL, CONDITIONING...).
  Refusals are per gateway, sentences in the prompt's language that name the nodes and say what to do.
* A cloud loader whose file exists on this machine (``file_exists`` says) is uploaded and pointed at it at
  run time, whatever its kind (images, video, audio, 3D: the one table, kinds.py); a file that does not exist
  here is passed on by name.
* Nodes of a region that no local node needs are removed from the local prompt, so local validation never
  sees cloud-only models, files or node types; a refused group keeps them (no dangling links in ComfyUI's
  report). A prompt without gateways is returned unchanged.
* A whole workflow (no gateway, the switch on, ``make_plan(..., whole=True)``): the same passes with one
  gateway (id ``WHOLE``) after every output node, so every node the outputs need is one cloud part; each
  output node is replaced here, under its own id, by a Cloud Output that saves or shows its files as the node
  would. What only makes sense here (Load Result) is refused on that node.
"""
from .graph import (CLOUD_OUTPUT, OUTPUT_CLASS_INPUT, OUTPUT_LANG_INPUT, OUTPUT_NODE_INPUT, OUTPUT_PREFIX_INPUT, REFUSAL_INPUT,  # noqa: F401
                    WHOLE, CROSS_PREFIX, GATEWAY, GATEWAY_OUTPUTS, IMAGE_INPUTS, LEAD_INPUT, MASK_INPUTS,  # noqa: F401
                    PLAN_INPUT, SCALARS, SKIP_UPLOAD_INPUT, TASK_ID_SLOT, UPLOAD, ClassInfo, ClassTable, is_link,
                    form_hash, node_label, plan_hash, shape_hash, work_units)
from .model import (CLOUD, IMAGE, LITERAL, LOCAL, MASK, PASS, REFUSED, URL, CloudOutput, Crossing, GatewayPlan,  # noqa: F401
                    LocalFile, Refusal, refused_plan)
from .passes import PlanResult, make_plan  # noqa: F401
