"""Entry points: thin absl programs (flags -> validated config -> one library call). Each module has its own
flag set `FLAGS` and a `main(argv)`; run one as a program (`python experiments/<name>.py --help`) or in-process
with `jaxleak.cli.call(module.main, module.FLAGS, ["--flag=value", ...])`."""
