//go:build linux

package rootless

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"slices"
	"strconv"
	"strings"

	sysuser "github.com/moby/sys/user"
	rspec "github.com/opencontainers/runtime-spec/specs-go"
)

// The mapping of a capsule's user namespace, without root. The user is
// root inside (container id 0); when /etc/subuid and /etc/subgid give the
// user ranges and newuidmap/newgidmap are installed, those ranges follow
// it as container ids 1, 2, ... (podman's layout: uid 1000 inside is the
// range's start + 999 on the host). libcontainer runs newuidmap and
// newgidmap (its nsexec writes uid_map itself for the one id it may map,
// and calls the setuid tool for anything more); without ranges only the
// user is mapped, and a capsule that runs as another user is refused.
type idMaps struct {
	uids, gids []rspec.LinuxIDMapping
	ranges     bool   // subordinate ranges are mapped
	why        string // without ranges: why not
	hint       string // without ranges: how to get them
}

const (
	subUIDFile = "/etc/subuid"
	subGIDFile = "/etc/subgid"
	// maxIDRanges bounds the lines of a uid_map (the kernel takes 340).
	maxIDRanges = 300
)

func detectIDMaps() idMaps {
	uid, gid := os.Geteuid(), os.Getegid()
	m := idMaps{
		uids: []rspec.LinuxIDMapping{{ContainerID: 0, HostID: uint32(uid), Size: 1}},
		gids: []rspec.LinuxIDMapping{{ContainerID: 0, HostID: uint32(gid), Size: 1}},
	}
	name := strconv.Itoa(uid)
	if u, err := user.LookupId(name); err == nil {
		name = u.Username
	}
	m.hint = fmt.Sprintf("as root: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 %s (and apt-get install uidmap for newuidmap and newgidmap)", name)
	for _, tool := range []string{"newuidmap", "newgidmap"} {
		if _, err := exec.LookPath(tool); err != nil {
			m.why = tool + " is not installed (package uidmap)"
			return m
		}
	}
	uids, why := subIDRanges(subUIDFile, name, uid)
	if why != "" {
		m.why = why
		return m
	}
	gids, why := subIDRanges(subGIDFile, name, gid)
	if why != "" {
		m.why = why
		return m
	}
	m.uids, m.gids, m.ranges, m.hint = append(m.uids, uids...), append(m.gids, gids...), true, ""
	return m
}

// subIDRanges are the ranges file gives the user (by name or uid), as
// container ids from 1 on; why says why there are none. A range holding the
// user's own id is left out: the kernel refuses overlapping ranges.
func subIDRanges(file, name string, own int) ([]rspec.LinuxIDMapping, string) {
	ids, err := sysuser.ParseSubIDFileFilter(file, func(s sysuser.SubID) bool {
		return s.Name == name || s.Name == strconv.Itoa(own)
	})
	if errors.Is(err, os.ErrNotExist) {
		return nil, file + " does not exist"
	}
	if err != nil {
		return nil, fmt.Sprintf("%s: %v", file, err)
	}
	var out []rspec.LinuxIDMapping
	next := int64(1)
	for _, s := range ids {
		if s.Count <= 0 || s.SubID < 0 || s.SubID+s.Count > 1<<32-1 || next+s.Count > 1<<32-1 ||
			(int64(own) >= s.SubID && int64(own) < s.SubID+s.Count) || len(out) == maxIDRanges {
			continue
		}
		out = append(out, rspec.LinuxIDMapping{ContainerID: uint32(next), HostID: uint32(s.SubID), Size: uint32(s.Count)})
		next += s.Count
	}
	if len(out) == 0 {
		return nil, fmt.Sprintf("%s has no range for %s", file, name)
	}
	return out, ""
}

// describe says which mapping capsules get.
func (m idMaps) describe() string {
	if !m.ranges {
		s := fmt.Sprintf("capsules map uid %d (you) to root inside the capsule, and no other id: %s", m.uids[0].HostID, m.why)
		return s + "; a capsule with user: other than root is refused"
	}
	r := func(ms []rspec.LinuxIDMapping) string {
		var parts []string
		for _, x := range ms[1:] {
			parts = append(parts, fmt.Sprintf("%d-%d -> %d-%d", x.ContainerID, x.ContainerID+x.Size-1, x.HostID, x.HostID+x.Size-1))
		}
		return strings.Join(parts, ", ")
	}
	return fmt.Sprintf("capsules map uid %d (you) to root inside, and through newuidmap/newgidmap uids %s, gids %s (%s, %s)",
		m.uids[0].HostID, r(m.uids), r(m.gids), subUIDFile, subGIDFile)
}

// maps reports whether the capsule's ids (the manifest's user) are mapped.
func (m idMaps) maps(uid, gid uint32) bool {
	in := func(ms []rspec.LinuxIDMapping, id uint32) bool {
		return slices.ContainsFunc(ms, func(x rspec.LinuxIDMapping) bool { return id >= x.ContainerID && id-x.ContainerID < x.Size })
	}
	return in(m.uids, uid) && in(m.gids, gid)
}
