# Sourced, not run: building OCI image layouts from Debian's busybox-static, without any
# registry (pushed afterwards with skopeo). The same image as ../shared/acceptance/lib.sh
# builds (which cannot be sourced by our scripts: it installs an EXIT trap). Used by
# deploy/test-infra.sh, deploy/quickstart.sh and bench/network.sh.

# busybox_rootfs ROOT: /bin/busybox and its applets, /etc/passwd and /etc/group, /tmp, /www.
busybox_rootfs() {
  local root=$1 a
  mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/www"
  cp "$(command -v busybox)" "$root/bin/busybox"
  for a in $("$root/bin/busybox" --list); do [[ $a == busybox ]] || ln -sf busybox "$root/bin/$a"; done
  echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
  echo 'nobody:x:65534:65534:nobody:/:/bin/false' >>"$root/etc/passwd"
  echo 'root:x:0:' >"$root/etc/group"
}

# oci_layout ROOT DIR CONFIG: an OCI image layout in DIR (tag `latest`) with ROOT as its one
# layer; CONFIG is the image config's `config` object as JSON (Env, Cmd, ...).
oci_layout() {
  local root=$1 dir=$2 config=$3
  local diff layer lsize cfg csize man msize
  mkdir -p "$dir/blobs/sha256"
  tar -C "$root" --numeric-owner --owner=0 --group=0 -cf "$dir/layer.tar" .
  diff=$(sha256sum "$dir/layer.tar" | cut -d' ' -f1)
  gzip -n -9 "$dir/layer.tar"
  layer=$(sha256sum "$dir/layer.tar.gz" | cut -d' ' -f1); lsize=$(stat -c %s "$dir/layer.tar.gz")
  mv "$dir/layer.tar.gz" "$dir/blobs/sha256/$layer"
  printf '{"architecture":"amd64","os":"linux","config":%s,"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$config" "$diff" >"$dir/config.json"
  cfg=$(sha256sum "$dir/config.json" | cut -d' ' -f1); csize=$(stat -c %s "$dir/config.json")
  mv "$dir/config.json" "$dir/blobs/sha256/$cfg"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' "$cfg" "$csize" "$layer" "$lsize" >"$dir/manifest.json"
  man=$(sha256sum "$dir/manifest.json" | cut -d' ' -f1); msize=$(stat -c %s "$dir/manifest.json")
  mv "$dir/manifest.json" "$dir/blobs/sha256/$man"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}' "$man" "$msize" >"$dir/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$dir/oci-layout"
}

# The PATH every image here sets.
OCI_IMAGE_PATH_ENV='"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]'

# build_busybox_image DIR: the busybox image (command `sh`) as an OCI layout in DIR.
build_busybox_image() {
  local dir=$1 root; root=$(mktemp -d)
  busybox_rootfs "$root"
  oci_layout "$root" "$dir" "{$OCI_IMAGE_PATH_ENV,\"Cmd\":[\"sh\"]}"
  rm -rf "$root"
}
