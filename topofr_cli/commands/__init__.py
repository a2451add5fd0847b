"""One module per user command: plain arguments in, a typed result out (`to_json()` is `--json`).

Each command function applies the output policy (`artifacts.outputs`), claims its outputs, runs the
core, writes its report (the `*_report` modules: files and figures) and returns what it measured, so
`cli/` only parses options and renders, and a notebook gets the same call (`topofr_cli.evaluate`,
...). This floor sits above every core folder and `plots/`, below `cli/` (docs/interfaces.md).
"""
