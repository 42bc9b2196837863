#!/usr/bin/env bash
# Add (or repair) an SFTP partner account for inboxd. Idempotent; run as root.
#
#   add-partner.sh [--root /srv/inboxd] [--daemon-user inboxd]
#                  [--keys-dir /etc/inboxd/authorized_keys]
#                  [--partner-group sftp-partners] PARTNER PUBKEY_FILE
#
# --root must match the daemon config's `root:`, ReadWritePaths= in
# inboxd.service and ChrootDirectory in sshd_config.d/inboxd-partners.conf.
# --keys-dir and --partner-group must match AuthorizedKeysFile and
# `Match Group` there; they exist so tests can run beside a real install.
#
# Layout and modes (P = the partner's user and primary group, D = the daemon
# user and its primary group):
#
#   path                    owner:group  mode  why
#   <root>                  root:root    0755  sshd: every chroot path component
#   <root>/P                root:root    0755    root-owned, not g/o-writable
#   <root>/P/inbox          P:D          2770  P uploads and renames; D reads the
#                                              0640 uploads through the group
#                                              (setgid hands D's group to every
#                                              upload) and renames them out; no
#                                              sticky bit, or D could not move
#                                              P's files
#   <root>/P/outbox         D:P          2770  D writes ACKs (0640, group P via
#   <root>/P/error          D:P          2770    setgid); P downloads and deletes
#                                              them (delete needs write on the
#                                              dir, so P can also create files
#                                              here: D never reads these dirs)
#   <root>/P/archive        D:D          0750  D only; P sees the name, no more
#   <root>/.work            D:D          0700  D's private working area, on the
#   <root>/.work/P          D:D          0700    same filesystem so that moving a
#                                              file out of an inbox is a rename
#   <keys-dir>              root:root    0755  sshd reads keys as the partner:
#   <keys-dir>/P            root:root    0644    readable, but not theirs to edit
#
# The partner account: system user P, primary group P, member of
# <partner-group>, shell /usr/sbin/nologin, home /, password field '*' (no
# password can match; unlike '!' it is not "locked", which sshd without PAM
# would refuse even for key logins).
#
# Re-running fixes owners and modes of the directories above; it never touches
# files inside them.
set -euo pipefail

root=/srv/inboxd
daemon_user=inboxd
keys_dir=/etc/inboxd/authorized_keys
partner_group=sftp-partners

usage() {
  sed -n '4,6p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
die() { echo "add-partner: $*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
  case $1 in
    --root) root=${2:?}; shift 2 ;;
    --daemon-user) daemon_user=${2:?}; shift 2 ;;
    --keys-dir) keys_dir=${2:?}; shift 2 ;;
    --partner-group) partner_group=${2:?}; shift 2 ;;
    -h|--help) usage ;;
    --) shift; break ;;
    -*) echo "add-partner: unknown option $1" >&2; usage ;;
    *) break ;;
  esac
done
[[ $# -eq 2 ]] || usage
partner=$1
pubkey=$2

[[ $(id -u) -eq 0 ]] || die "must run as root"
# A user name that is also a safe single path component (no dots: never '.work').
[[ $partner =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] || die "invalid partner name '$partner' (want [a-z_][a-z0-9_-]{0,31})"
[[ $partner != "$daemon_user" && $partner != root ]] || die "partner name '$partner' is reserved"
[[ $root == /* && $keys_dir == /* ]] || die "--root and --keys-dir must be absolute paths"
root=${root%/}
keys_dir=${keys_dir%/}
id -u "$daemon_user" >/dev/null 2>&1 ||
  die "daemon user '$daemon_user' does not exist (useradd --system --user-group --home-dir /var/lib/inboxd --shell /usr/sbin/nologin $daemon_user)"
daemon_group=$(id -gn "$daemon_user")
[[ -r $pubkey ]] || die "cannot read public key file '$pubkey'"
ssh-keygen -l -f "$pubkey" >/dev/null 2>&1 || die "'$pubkey' is not a valid OpenSSH public key file"

# sshd refuses a chroot whose path has a component not owned by root or
# writable by group or others; say so now rather than at the partner's login.
check_root_path() {
  local p=$1 uid mode
  while :; do
    if [[ -e $p ]]; then
      read -r uid mode < <(stat -c '%u %a' "$p")
      [[ $uid -eq 0 ]] || die "$p must be owned by root (sshd ChrootDirectory)"
      (( (8#$mode & 8#022) == 0 )) || die "$p must not be group- or world-writable (sshd ChrootDirectory)"
    fi
    [[ $p == / ]] && break
    p=$(dirname "$p")
  done
}
check_root_path "$(dirname "$root")"

# sshd reads the key file as the partner, so every directory above it must be
# searchable by others.
check_traversable() {
  local p=$1 mode
  while [[ $p != / ]]; do
    if [[ -e $p ]]; then
      mode=$(stat -c '%a' "$p")
      (( (8#$mode & 8#001) != 0 )) || die "$p must be searchable by others (o+x): sshd reads $keys_dir/$partner as the partner"
    fi
    p=$(dirname "$p")
  done
}
check_traversable "$(dirname "$keys_dir")"

getent group "$partner_group" >/dev/null || groupadd --system "$partner_group"

if id -u "$partner" >/dev/null 2>&1; then
  # Only ever adopt accounts this script made: adding an existing system or
  # human account to the partner group would chroot it into a partner tree.
  id -nG "$partner" | tr ' ' '\n' | grep -qx "$partner_group" ||
    die "user '$partner' exists and is not in group '$partner_group': refusing to turn it into a partner account"
  IFS=: read -r _ _ _ _ _ home shell < <(getent passwd "$partner")
  [[ $home == / && $shell == /usr/sbin/nologin ]] || usermod --shell /usr/sbin/nologin --home / "$partner"
else
  useradd --system --user-group --no-create-home --home-dir / --shell /usr/sbin/nologin \
    --groups "$partner_group" --comment "inboxd partner" "$partner"
fi
case $(getent shadow "$partner" | cut -d: -f2) in
  '*') ;;
  *) usermod --password '*' "$partner" ;;
esac
partner_group_own=$(id -gn "$partner")

# mkdir_owned PATH OWNER GROUP MODE: create if missing, then enforce owner and
# mode (chmod after chown: chown clears the setgid bit).
mkdir_owned() {
  [[ -L $1 ]] && die "$1 is a symlink"
  [[ -d $1 ]] || mkdir "$1"
  chown "$2:$3" "$1"
  chmod "$4" "$1"
}

mkdir -p "$(dirname "$root")"
mkdir_owned "$root" root root 0755
mkdir_owned "$root/$partner" root root 0755
mkdir_owned "$root/$partner/inbox" "$partner" "$daemon_group" 2770
mkdir_owned "$root/$partner/outbox" "$daemon_user" "$partner_group_own" 2770
mkdir_owned "$root/$partner/error" "$daemon_user" "$partner_group_own" 2770
mkdir_owned "$root/$partner/archive" "$daemon_user" "$daemon_group" 0750
mkdir_owned "$root/.work" "$daemon_user" "$daemon_group" 0700
mkdir_owned "$root/.work/$partner" "$daemon_user" "$daemon_group" 0700

mkdir -p "$keys_dir"
chown root:root "$keys_dir"
chmod 0755 "$keys_dir"
tmp=$(mktemp "$keys_dir/.$partner.XXXXXX")
trap 'rm -f "$tmp"' EXIT
cat "$pubkey" >"$tmp"
chown root:root "$tmp"
chmod 0644 "$tmp"
mv -f "$tmp" "$keys_dir/$partner"
trap - EXIT

echo "add-partner: $partner ready: chroot $root/$partner, key $keys_dir/$partner ($(ssh-keygen -l -f "$keys_dir/$partner" | awk '{print $2}' | paste -sd, -))"
