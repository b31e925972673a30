"""Universal neurons: MLP neurons in the top-k |activation| of most prompts unrelated to any
task (`detect`), the settings of that detection (`settings`). Circuits leave them out."""
