# shellcheck shell=bash
# Sourced by the start scripts, on-reboot.sh, compose.sh and healthcheck.sh: asks a
# station binary for the configuration (`--print-config`: every variable as the
# binaries resolve it, the core plan, the file names), finds the binaries, and prints
# one-line messages. Nothing here re-derives what the binaries know.
#
#   CONJURE_CONF   the conjure.conf to load (default: sysconfig/conjure.conf of this
#                  checkout, /opt/conjure/sysconfig/conjure.conf in the images); it
#                  sources /var/lib/conjure/conjure.conf for local overrides
#   CJ_BIN_DIR     where cj-balancer, cj-detector and cj-app are (default: target/release
#                  of this checkout when built, else PATH)
#
# Precedence is the binaries' own: defaults < conjure.conf (and its includes) < the
# environment. The variables are set in the calling shell but exported only when
# they already were; the binaries are started with `--config "$CONJURE_CONF"`, so
# they read the same file themselves and a bad value is reported with its file and line.

CONJURE_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONJURE_CONF=${CONJURE_CONF:-$CONJURE_REPO/sysconfig/conjure.conf}
CONJURE_PROG=${CONJURE_PROG:-$(basename "$0")}

# One line on stderr, prefixed with the program name.
cj_say() {
    printf '%s: %s\n' "$CONJURE_PROG" "$*" >&2
}

# One line on stderr, then exit (2: configuration, 3: a precondition of the host).
cj_die() {
    local code=$1
    shift
    cj_say "$*"
    exit "$code"
}

# Loads the configuration into this shell as the binaries resolve it:
#   cj_load_conf NAME [sh]
# runs NAME (`any`: the first of cj-balancer, cj-detector, cj-app that is there)
# with `--config "$CONJURE_CONF" --print-config` and evals what it prints: every
# variable (NAME='value'), where each came from (CJ_ORIGIN_NAME), the core plan
# (CJ_PLAN_*) and the file names (CJ_PATH_*). A bad value stops the script with the
# binary's one line (exit 2). With no binary there, a script that must run before
# anything is installed (on-reboot.sh) passes `sh`: the file is then read by
# cj_read_conf (a subset of the binary's format; nothing in it is run or expanded;
# the environment still wins) and the script checks the variables it reads itself;
# e2e/tests/scripts.rs checks that both ways agree.
cj_load_conf() {
    if [ ! -f "$CONJURE_CONF" ] || [ ! -r "$CONJURE_CONF" ]; then
        cj_die 2 "CONJURE_CONF=\"$CONJURE_CONF\": expected a readable conjure.conf (sysconfig/conjure.conf of the checkout)"
    fi
    local want=$1 fallback=${2:-} name bin="" printed
    [ "$want" = any ] && want="cj-balancer cj-detector cj-app"
    for name in $want; do
        if bin=$(cj_find_bin "$name"); then
            break
        fi
    done
    if [ -z "$bin" ]; then
        if [ "$fallback" = sh ]; then
            cj_source_conf
            return 0
        fi
        cj_die 3 "${want// / or } not found (looked in ${CJ_BIN_DIR:+$CJ_BIN_DIR, }$CONJURE_REPO/target/release and PATH); it prints the configuration this script needs (--print-config): run make build, or set CJ_BIN_DIR"
    fi
    # The binary says what is wrong, in one line; its exit code is ours.
    printed=$("$bin" --config "$CONJURE_CONF" --print-config) || exit $?
    eval "$printed"
}

# Reads CONJURE_CONF here, the environment winning: the fallback of cj_load_conf.
cj_source_conf() {
    local name
    local -A from_env=()
    for name in $(compgen -e); do
        case $name in
            CJ_* | ZBALANCE_HASH_MODE | N_QUEUE_SETS | PFRING_VER | PF_DRIVER) from_env[$name]=${!name} ;;
        esac
    done
    cj_read_conf "$CONJURE_CONF" ""
    for name in "${!from_env[@]}"; do
        printf -v "$name" '%s' "${from_env[$name]}"
        export "${name?}"
    done
}

# Reads a conjure.conf without sh (it runs as root before anything is installed, and
# nothing in the file may run): cj_read_conf FILE INCLUDERS. Each file is read once
# and must be a strict subset of what the station's parser accepts
# (station/src/config/file.rs): blank lines, # comments, `true`, `:`, `[export] NAME=VALUE
# ...` with VALUE unquoted (letters, digits and _ . / : , + = @ % -), 'single' or
# "double" quoted, and the includes `. FILE`, `source FILE`, `[ -f FILE ] && . FILE`
# (-r, -e; `test -f FILE && . FILE`), each included file read the same way. Nowhere
# (comments aside) a $, backquote, backslash, ; | < > ( ) or &: anything else stops the
# script with one line naming the file and line (exit 2). Sets the station's names
# (CJ_*, ZBALANCE_HASH_MODE, N_QUEUE_SETS, PFRING_VER, PF_DRIVER) and ignores others.
# As the binaries, each file must be root's or this user's and writable by no one else
# (a link to it made by root or this user); another is refused unread (exit 2).
cj_read_conf() {
    local _cj_file=$1 _cj_from=$2 _cj_text _cj_line _cj_n=0 _cj_rest _cj_w _cj_t _cj_f _cj_real
    local -a _cj_lines
    # A word: unquoted safe characters and quoted strings without expansions.
    local _cj_word="([A-Za-z0-9_./:,+=@%-]|'[^'\$\`\\;|<>()&]*'|\"[^\"\$\`\\;|<>()&]*\")+"
    local _cj_end='([[:blank:]]+(#.*)?)?$'
    _cj_real=$(readlink -f -- "$_cj_file" || printf '%s' "$_cj_file")
    if [[ "$_cj_from" == *"|$_cj_real|"* ]]; then
        cj_die 2 "$_cj_file: included again from a file it includes: remove the loop"
    fi
    # As the parser: at most 8 files open at once (the first and 7 nested includes).
    if [ "$(printf '%s' "$_cj_from" | tr -cd '|' | wc -c)" -ge 16 ]; then
        cj_die 2 "$_cj_file: includes nested more than 8 deep: flatten them"
    fi
    if [ ! -f "$_cj_file" ] || [ ! -r "$_cj_file" ]; then
        cj_die 2 "$_cj_file: expected a readable regular file (an include of a conjure.conf)"
    fi
    # As the binaries (station::config::open_operator_file): a configuration file is the
    # operator's: owned by root or this user, writable by no one else, and a symbolic link
    # to it only when root or this user made the link. Refused files are never read.
    local _cj_me _cj_st _cj_mode
    _cj_me=$(id -u)
    if [ -L "$_cj_file" ]; then
        _cj_st=$(stat -c %u -- "$_cj_file")
        if [ "$_cj_st" != 0 ] && [ "$_cj_st" != "$_cj_me" ]; then
            cj_die 2 "$_cj_file is a symbolic link owned by uid $_cj_st, neither root nor this process's user (uid $_cj_me): not followed; name the file itself, or remove the link"
        fi
    fi
    _cj_st=$(stat -L -c '%u %a' -- "$_cj_file") || cj_die 2 "$_cj_file: could not be read"
    _cj_mode=8#${_cj_st#* }
    if [ "${_cj_st% *}" != 0 ] && [ "${_cj_st% *}" != "$_cj_me" ]; then
        cj_die 2 "$_cj_file is owned by uid ${_cj_st% *}, neither root nor this process's user (uid $_cj_me), and a configuration file is the operator's: chown root $_cj_file (or to uid $_cj_me), or name a file root owns"
    fi
    if [ $((_cj_mode & 8#022)) != 0 ]; then
        cj_die 2 "$_cj_file has mode ${_cj_st#* }: other users than its owner may write it: chmod go-w $_cj_file"
    fi
    _cj_text=$(cat -- "$_cj_file") || cj_die 2 "$_cj_file: could not be read"
    mapfile -t _cj_lines <<<"$_cj_text"
    for _cj_line in "${_cj_lines[@]}"; do
        _cj_n=$((_cj_n + 1))
        _cj_line=${_cj_line%$'\r'}
        _cj_rest=${_cj_line#"${_cj_line%%[![:blank:]]*}"}
        # Blank, comment, or a no-op.
        if [[ -z $_cj_rest || $_cj_rest == "#"* || $_cj_rest =~ ^(true|:)$_cj_end ]]; then
            continue
        fi
        # Includes.
        if [[ $_cj_rest =~ ^(\.|source)[[:blank:]]+($_cj_word)$_cj_end ]]; then
            _cj_f=$(cj_unquote "${BASH_REMATCH[2]}")
            cj_read_conf "$_cj_f" "$_cj_from|$_cj_real|"
            continue
        fi
        if [[ $_cj_rest =~ ^(\[[[:blank:]]+(-[fre])[[:blank:]]+($_cj_word)[[:blank:]]+\]|test[[:blank:]]+(-[fre])[[:blank:]]+($_cj_word))[[:blank:]]+\&\&[[:blank:]]+(\.|source)[[:blank:]]+($_cj_word)$_cj_end ]]; then
            _cj_t=${BASH_REMATCH[2]:-${BASH_REMATCH[5]}}
            _cj_w=${BASH_REMATCH[3]:-${BASH_REMATCH[6]}}
            _cj_f=$(cj_unquote "${BASH_REMATCH[9]}")
            if [ "$(cj_unquote "$_cj_w")" != "$_cj_f" ]; then
                cj_die 2 "$_cj_file:$_cj_n: \"$_cj_rest\": expected \"[ -f FILE ] && . FILE\" testing the file it includes"
            fi
            if test "$_cj_t" "$_cj_f"; then
                cj_read_conf "$_cj_f" "$_cj_from|$_cj_real|"
            fi
            continue
        fi
        # Assignments.
        if [[ $_cj_rest =~ ^export[[:blank:]]+ ]]; then
            _cj_rest=${_cj_rest#"${BASH_REMATCH[0]}"}
        fi
        local -a _cj_set=()
        while [[ $_cj_rest =~ ^([A-Za-z_][A-Za-z0-9_]*)=(($_cj_word)?)([[:blank:]]+|$) ]]; do
            _cj_set+=("${BASH_REMATCH[1]}" "$(cj_unquote "${BASH_REMATCH[2]}")")
            _cj_rest=${_cj_rest#"${BASH_REMATCH[0]}"}
            [[ -z $_cj_rest || $_cj_rest == "#"* ]] && break
        done
        if [ "${#_cj_set[@]}" = 0 ] || [[ -n $_cj_rest && $_cj_rest != "#"* ]]; then
            # At most 32 printable characters of the line, as the binaries quote it.
            local _cj_show=${_cj_line#"${_cj_line%%[![:blank:]]*}"}
            _cj_show=${_cj_show//[^[:print:]]/?}
            [ "${#_cj_show}" -gt 32 ] && _cj_show="${_cj_show:0:32}..."
            cj_die 2 "$_cj_file:$_cj_n: \"$_cj_show\": expected NAME=VALUE with a literal value, a # comment, \". FILE\" or \"[ -f FILE ] && . FILE\": write the value without \$, backquotes, backslashes, ; | < > ( ) or & (nothing in conjure.conf is expanded or run)"
        fi
        for ((_cj_t = 0; _cj_t < ${#_cj_set[@]}; _cj_t += 2)); do
            case ${_cj_set[_cj_t]} in
                CJ_* | ZBALANCE_HASH_MODE | N_QUEUE_SETS | PFRING_VER | PF_DRIVER)
                    printf -v "${_cj_set[_cj_t]}" '%s' "${_cj_set[_cj_t + 1]}"
                    ;;
            esac
        done
    done
}

# A word of cj_read_conf with its quotes removed (it has no backslash or expansion).
cj_unquote() {
    local w=$1 out="" q
    while [ -n "$w" ]; do
        case $w in
            \'*)
                w=${w#\'}
                q=${w%%\'*}
                out+=$q
                w=${w#"$q"\'}
                ;;
            \"*)
                w=${w#\"}
                q=${w%%\"*}
                out+=$q
                w=${w#"$q"\"}
                ;;
            *)
                q=${w%%[\'\"]*}
                out+=$q
                w=${w#"$q"}
                ;;
        esac
    done
    printf '%s' "$out"
}

# Path of a station binary, or status 1 when there is none: CJ_BIN_DIR, then
# target/release of this checkout, then PATH.
cj_find_bin() {
    local name=$1 dir
    for dir in ${CJ_BIN_DIR:+"$CJ_BIN_DIR"} "$CONJURE_REPO/target/release"; do
        if [ -x "$dir/$name" ]; then
            printf '%s\n' "$dir/$name"
            return 0
        fi
    done
    command -v "$name" 2>/dev/null
}

# Path of a station binary; stops the script when there is none.
cj_bin() {
    cj_find_bin "$1" || cj_die 3 "$1 not found (looked in ${CJ_BIN_DIR:+$CJ_BIN_DIR, }$CONJURE_REPO/target/release and PATH): run make build, or set CJ_BIN_DIR"
}

# Replaces this shell with a station binary reading CONJURE_CONF, so that signals
# (systemd's, docker's) and the systemd notify socket reach the binary itself.
cj_exec() {
    local name=$1
    shift
    local bin
    bin=$(cj_bin "$name")
    exec "$bin" --config "$CONJURE_CONF" "$@"
}

# Whole number check for on-reboot.sh's own checks: cj_number VAR MIN MAX.
cj_number() {
    local var=$1 min=$2 max=$3 value=${!1-}
    if ! [[ $value =~ ^[0-9]+$ ]] || [ "${#value}" -gt 9 ] || [ "$value" -lt "$min" ] || [ "$value" -gt "$max" ]; then
        cj_die 2 "$var=\"$value\" ($CONJURE_CONF or environment): expected a whole number from $min to $max"
    fi
}
