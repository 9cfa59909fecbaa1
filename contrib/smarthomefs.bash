# bash completion for smarthomefs(1) and mount.smarthomefs(8).

_smarthomefs_options()
{
	echo "ttl= timeout= api_url= hops_url= auth_url= cafile= cache_dir= state_dir= token_store=keyring
		token_store=file offline debug allow_other max_threads= prefetch= prefetch_max= max_entries= cache_memory_mib= cache_disk_mib= render_memory_mib=
		history_days= history_budget= fuse_debug fsname=
		allow_root auto_unmount default_permissions"
}

# The accounts logged in, from `smarthomefs status --json` (never a token).
_smarthomefs_accounts()
{
	smarthomefs status --json 2>/dev/null |
		sed -n 's/^ *"account": "\([^"]*\)".*/\1/p'
}

_smarthomefs()
{
	local cur prev words cword
	_init_completion -n := || return

	if [[ $prev == -o || $prev == --option ]]; then
		local prefix=${cur%,*}
		[[ $prefix == "$cur" ]] && prefix="" || prefix+=","
		local IFS=$' \t\n'
		COMPREPLY=($(compgen -P "$prefix" -W "$(_smarthomefs_options)" -- "${cur##*,}"))
		[[ ${COMPREPLY-} == *= ]] && compopt -o nospace
		return
	fi

	local cmd=${words[0]##*/}
	if [[ $cmd == mount.smarthomefs ]]; then
		if [[ $cur == -* ]]; then
			COMPREPLY=($(compgen -W "-o -s -f -n -v --help --version" -- "$cur"))
		elif ((cword == 1)); then
			COMPREPLY=($(compgen -W "$(_smarthomefs_accounts) tado tibber all" -- "$cur"))
		else
			_filedir -d
		fi
		return
	fi

	if ((cword == 1)); then
		COMPREPLY=($(compgen -W "login logout status mount --help --version" -- "$cur"))
		return
	fi
	case ${words[1]} in
	login)
		if [[ $cur == -* ]]; then
			COMPREPLY=($(compgen -W "--account --client-id --port --redirect-uri --no-browser --scope
				--timeout -o --help --version" -- "$cur"))
		elif ((cword == 2)); then
			COMPREPLY=($(compgen -W "tado tibber" -- "$cur"))
		fi
		;;
	logout | status)
		if [[ $cur == -* ]]; then
			local flags="-o --help --version"
			[[ ${words[1]} == status ]] && flags+=" --json"
			COMPREPLY=($(compgen -W "$flags" -- "$cur"))
		else
			COMPREPLY=($(compgen -W "$(_smarthomefs_accounts)" -- "$cur"))
		fi
		;;
	mount)
		if [[ $cur == -* ]]; then
			COMPREPLY=($(compgen -W "-f --foreground -o --help --version" -- "$cur"))
		elif ((cword == 2)); then
			COMPREPLY=($(compgen -W "$(_smarthomefs_accounts) all" -- "$cur"))
			_filedir -d
		else
			_filedir -d
		fi
		;;
	esac
} &&
	complete -F _smarthomefs smarthomefs mount.smarthomefs
