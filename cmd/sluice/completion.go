package main

import (
	"fmt"
	"io"
)

const bashCompletion = `# bash completion for sluice: source <(sluice completion bash)
_sluice() {
  local cur prev words cword
  _init_completion 2>/dev/null || { cur="${COMP_WORDS[COMP_CWORD]}"; prev="${COMP_WORDS[COMP_CWORD-1]}"; cword=$COMP_CWORD; words=("${COMP_WORDS[@]}"); }
  local cmds="load serve worker api jobs dlq bench completion version help"
  if [ "$cword" -eq 1 ]; then COMPREPLY=($(compgen -W "$cmds" -- "$cur")); return; fi
  case "${words[1]}" in
    jobs) [ "$cword" -eq 2 ] && COMPREPLY=($(compgen -W "ls show wait rollback" -- "$cur")) && return
          COMPREPLY=($(compgen -W "--api-url --json --state --env --limit --cursor --wait" -- "$cur")) ;;
    dlq)  [ "$cword" -eq 2 ] && COMPREPLY=($(compgen -W "ls show replay purge" -- "$cur")) && return
          COMPREPLY=($(compgen -W "--api-url --json --job --subject --error-class --since --until --limit --cursor --dry-run --rate --max-replays --yes" -- "$cur")) ;;
    load) case "$prev" in --env) COMPREPLY=($(compgen -W "dev test prod" -- "$cur")); return;; esac
          if [[ "$cur" == -* ]]; then COMPREPLY=($(compgen -W "--env --json --force --data-dir --nats-url" -- "$cur")); else COMPREPLY=($(compgen -f -- "$cur")); fi ;;
    bench) [ "$cword" -eq 2 ] && COMPREPLY=($(compgen -W "astra api backlog" -- "$cur")) && return
           case "${words[2]}" in
             api) COMPREPLY=($(compgen -W "--clients --duration --chunks-per-job --settle --timeout --dir --json" -- "$cur")) ;;
             backlog) case "$prev" in --modes) COMPREPLY=($(compgen -W "embedded client embedded,client" -- "$cur")); return;; esac
                      COMPREPLY=($(compgen -W "--chunks --modes --timeout --dir --json" -- "$cur")) ;;
             *) case "$prev" in --modes) COMPREPLY=($(compgen -W "seed astrapy sluice jetstream seed,astrapy,sluice,jetstream astrapy,sluice,jetstream" -- "$cur")); return;; esac
                COMPREPLY=($(compgen -W "--chunks --latency --runs --modes --dir --json" -- "$cur")) ;;
           esac ;;
    completion) COMPREPLY=($(compgen -W "bash zsh" -- "$cur")) ;;
    *) COMPREPLY=($(compgen -W "--data-dir --nats-url --http-addr --tokens-file --drain-timeout" -- "$cur")) ;;
  esac
}
complete -F _sluice sluice
`

const zshCompletion = `#compdef sluice
# zsh completion for sluice: source <(sluice completion zsh)
autoload -U bashcompinit && bashcompinit
` + bashCompletion

func cmdCompletion(args []string, stdout io.Writer) error {
	if len(args) != 1 {
		return usageError{"completion: name a shell: bash or zsh"}
	}
	switch args[0] {
	case "bash":
		_, err := io.WriteString(stdout, bashCompletion)
		return err
	case "zsh":
		_, err := io.WriteString(stdout, zshCompletion)
		return err
	}
	return usageError{fmt.Sprintf("completion: unknown shell %q (bash, zsh)", args[0])}
}
