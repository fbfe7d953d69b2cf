#!/bin/sh
# The machine of the end-to-end suite, run by e2e.py in a private mount namespace
# (unshare -m): boot.sh DIR
#
# DIR/root becomes a copy-on-write view of this machine's / (overlayfs, its upper layer
# on a tmpfs), so that installing, running and purging the package there leaves the
# machine as it was. DIR/shared is seen there as /e2e: the suite's files, sockets and
# logs, reachable from outside. Then busybox init boots in a private pid namespace
# (unshare -pf --mount-proc) as its PID 1, and once it is stopped the package is purged.
set -eu
dir=$1
root=$dir/root

mount --make-rprivate /
mount -t tmpfs -o mode=755 e2e-layer "$dir/layer"
mkdir "$dir/layer/upper" "$dir/layer/work"
mount -t overlay e2e-root \
    -o "lowerdir=/,upperdir=$dir/layer/upper,workdir=$dir/layer/work" "$root"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=755 e2e-run "$root/run"
mount -t tmpfs -o mode=1777 e2e-tmp "$root/tmp"
mkdir -p "$root/e2e"
mount --bind "$dir/shared" "$root/e2e"

echo "== dpkg -i going.deb"
chroot "$root" dpkg -i /e2e/going.deb
chroot "$root" dpkg-query -W -f '${Package} ${Version} ${Status}\n' going
chroot "$root" dpkg -L going > "$dir/shared/dpkg-L"

# The suite's services and init's table, where an admin puts them.
mount --bind "$dir/shared/going.d" "$root/etc/going.d"
cp "$dir/shared/inittab" "$root/etc/inittab"

echo "== busybox init"
status=0
CONSOLE=/e2e/console.log unshare -pf --mount-proc="$root/proc" \
    chroot "$root" /bin/busybox init || status=$?
echo "== init exited ($status)"

umount "$root/etc/going.d"
echo "== dpkg --purge going"
chroot "$root" dpkg --purge going
left=$(cd "$root" && ls -d usr/sbin/going usr/share/man/man8/going.8.gz \
    usr/share/man/man5/going.d.5.gz usr/share/doc/going etc/going.d 2>/dev/null || true)
if chroot "$root" dpkg-query -W going >/dev/null 2>&1; then
    echo "purge: dpkg still knows going"; exit 1
fi
if [ -n "$left" ]; then
    echo "purge left:" $left; exit 1
fi
echo "purged: nothing of going is left"
