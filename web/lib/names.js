// Names the editor features share with the server (node classes, the prompt input carrying the language).
export const GATEWAY = "GPUGeekCloudExecute";
// the editor's language, added to each gateway's inputs of a queued prompt; the server pops it before validation
export const LANG_INPUT = "gpugeek_lang";
// the frontend's widget that shows a node's progress text (the server's send_progress_text), 1.27 and 1.58
export const PROGRESS_TEXT_WIDGET = "$$node-text-preview";
// a whole workflow in the cloud: the prompt's extra_data key of the switch (and of the editor's language),
// the workflow's extra key keeping the switch with the workflow, and the id of the gateway the server adds
export const WHOLE_KEY = "gpugeek_whole_workflow";
export const WHOLE_LANG_KEY = "gpugeek_lang";
// a whole workflow's variations at once: the prompt's extra_data key and the workflow's extra key (the same name)
export const WHOLE_RUNS_KEY = "gpugeek_runs";
export const MAX_WHOLE_RUNS = 8;   // offload/run/fanout.py MAX_RUNS: the server caps it the same
export const WHOLE = "gpugeek_whole";
