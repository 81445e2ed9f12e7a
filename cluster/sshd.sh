#!/usr/bin/env bash
# A dedicated, key-only sshd on 127.0.0.1 for trying a DVC remote over SSH locally (and for
# tests/test_remote_ssh.py): its own config, host key and pid file under DIR, its own port,
# never the system's sshd. Needs root; no systemd (it runs sshd directly). Idempotent.
#
#   cluster/sshd.sh install        # Debian's openssh-server from apt (if sshd is missing)
#   cluster/sshd.sh start [DIR]    # DIR defaults to /etc/ssh-dvc
#   cluster/sshd.sh status [DIR]   # running? and can the key log in?
#   cluster/sshd.sh stop [DIR]
#
# Settings (environment): SSHD_DVC_PORT (2222); SSHD_DVC_USER, the one who may log in (the
# user who ran sudo, else the current user); SSHD_DVC_KEY, that user's dedicated key (made if
# missing, added to their ~/.ssh/authorized_keys; default ~/.ssh/dvc_test_ed25519). Then:
#   ssh -i ~/.ssh/dvc_test_ed25519 -p 2222 -o StrictHostKeyChecking=accept-new root@127.0.0.1 true
set -euo pipefail

CMD=${1:-}
DIR=${2:-${SSHD_DVC_DIR:-/etc/ssh-dvc}}
PORT=${SSHD_DVC_PORT:-2222}
LOGIN=${SSHD_DVC_USER:-${SUDO_USER:-$(id -un)}}
HOME_DIR=$(getent passwd "$LOGIN" | cut -d: -f6) || true
KEY=${SSHD_DVC_KEY:-$HOME_DIR/.ssh/dvc_test_ed25519}
SSHD=/usr/sbin/sshd
CONFIG=$DIR/sshd_config
PIDFILE=$DIR/sshd.pid
LOG=$DIR/sshd.log

die() { echo "sshd.sh: $*" >&2; exit 1; }
need_root() { [ "$(id -u)" = 0 ] || die "$1 needs root"; }
[ -n "$HOME_DIR" ] || die "no such user: $LOGIN"

pid() {  # the pid of our sshd, if it is running
    [ -s "$PIDFILE" ] || return 1
    local p
    p=$(cat "$PIDFILE")
    kill -0 "$p" 2>/dev/null && [ "$(readlink "/proc/$p/exe" 2>/dev/null)" = "$SSHD" ] || return 1
    echo "$p"
}

do_install() {
    need_root install
    if [ -x "$SSHD" ]; then echo "openssh-server is installed ($SSHD)"; return; fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # No init system here: the package's postinst may fail to start the system sshd, harmless.
    apt-get install -y -qq --no-install-recommends openssh-server openssh-client
    [ -x "$SSHD" ] || die "apt-get did not install $SSHD"
}

user_key() {  # a dedicated key pair for LOGIN, authorized for key-only login
    local ssh_dir=$HOME_DIR/.ssh auth=$HOME_DIR/.ssh/authorized_keys
    install -d -m 700 -o "$LOGIN" "$ssh_dir" "$(dirname "$KEY")"
    if [ ! -f "$KEY" ]; then
        ssh-keygen -q -t ed25519 -N '' -C "dvc-test@$(hostname)" -f "$KEY"
        chown "$LOGIN" "$KEY" "$KEY.pub"
    fi
    [ -f "$KEY.pub" ] || ssh-keygen -y -f "$KEY" > "$KEY.pub"
    touch "$auth"
    chown "$LOGIN" "$auth"
    chmod 600 "$auth"
    grep -qxF "$(cat "$KEY.pub")" "$auth" || cat "$KEY.pub" >> "$auth"
}

write_config() {
    install -d -m 700 "$DIR"
    [ -f "$DIR/ssh_host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$DIR/ssh_host_ed25519_key"
    cat > "$CONFIG.tmp" <<EOF
# Written by cluster/sshd.sh: a key-only sshd for a local DVC remote. Rewritten on each start.
Port $PORT
ListenAddress 127.0.0.1
HostKey $DIR/ssh_host_ed25519_key
PidFile $PIDFILE
AuthorizedKeysFile .ssh/authorized_keys
AllowUsers $LOGIN
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitEmptyPasswords no
UsePAM no
X11Forwarding no
PrintMotd no
Subsystem sftp internal-sftp
EOF
    mv "$CONFIG.tmp" "$CONFIG"
}

check_login() {
    ssh -i "$KEY" -p "$PORT" -o BatchMode=yes -o IdentitiesOnly=yes -o ConnectTimeout=5 \
        -o StrictHostKeyChecking=accept-new "$LOGIN@127.0.0.1" true
}

do_start() {
    need_root start
    [ -x "$SSHD" ] || die "$SSHD not found: run '$0 install' first"
    user_key
    write_config
    install -d -m 755 /run/sshd   # sshd's privilege separation directory
    "$SSHD" -t -f "$CONFIG"
    if p=$(pid); then
        kill -HUP "$p"   # reload the (rewritten) config
        echo "sshd already running (pid $p), config reloaded"
    else
        "$SSHD" -f "$CONFIG" -E "$LOG"
        for _ in $(seq 50); do pid >/dev/null && break; sleep 0.1; done
        pid >/dev/null || die "sshd did not start; see $LOG"
        echo "sshd started (pid $(pid)) on 127.0.0.1:$PORT, config $CONFIG"
    fi
    for _ in $(seq 50); do check_login 2>/dev/null && break; sleep 0.1; done
    check_login || die "key login as $LOGIN failed; see $LOG"
    echo "key login works: ssh -i $KEY -p $PORT $LOGIN@127.0.0.1"
}

do_stop() {
    if p=$(pid); then
        kill "$p"
        for _ in $(seq 50); do pid >/dev/null || break; sleep 0.1; done
        echo "sshd stopped (pid $p)"
    else
        echo "sshd not running"
    fi
    rm -f "$PIDFILE"
}

do_status() {
    if p=$(pid); then
        echo "sshd running (pid $p) on 127.0.0.1:$PORT, config $CONFIG"
        if check_login 2>/dev/null; then echo "key login as $LOGIN works ($KEY)"
        else echo "key login as $LOGIN FAILS ($KEY)"; return 1; fi
    else
        echo "sshd not running (config $CONFIG)"
        return 3
    fi
}

case "$CMD" in
    install) do_install ;;
    start) do_start ;;
    stop) do_stop ;;
    status) do_status ;;
    *) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
