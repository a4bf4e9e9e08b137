package reconcile

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/store"
)

// ClientConfig is what a client needs to connect: the material of a
// wg-quick file.
type ClientConfig struct {
	// PrivateKey is set only when wgkeeper generated the key pair.
	PrivateKey   *wgtypes.Key
	Addresses    []netip.Prefix // the client's addresses with the profile's prefix lengths
	DNS          []string
	ServerKey    wgtypes.Key
	PresharedKey *wgtypes.Key
	AllowedIPs   []netip.Prefix
	Endpoint     string
	Keepalive    time.Duration
}

func clientConfig(p store.Peer, prof config.Profile, ifc config.Interface, serverKey wgtypes.Key, priv *wgtypes.Key) ClientConfig {
	c := ClientConfig{
		PrivateKey:   priv,
		DNS:          prof.DNS,
		ServerKey:    serverKey,
		PresharedKey: p.PresharedKey,
		AllowedIPs:   prof.ClientAllowedIPs,
		Endpoint:     ifc.Endpoint,
		Keepalive:    prof.PersistentKeepalive,
	}
	if p.IPv4.IsValid() {
		c.Addresses = append(c.Addresses, netip.PrefixFrom(p.IPv4, prof.IPv4Range.Bits()))
	}
	if p.IPv6.IsValid() {
		c.Addresses = append(c.Addresses, netip.PrefixFrom(p.IPv6, prof.IPv6Range.Bits()))
	}
	return c
}

// WGQuick renders the config in wg-quick(8) format. Without a private key
// (the client brought its own) the PrivateKey line is a comment telling the
// user to fill it in.
func (c ClientConfig) WGQuick() string {
	var b strings.Builder
	b.WriteString("[Interface]\n")
	if c.PrivateKey != nil {
		fmt.Fprintf(&b, "PrivateKey = %s\n", c.PrivateKey.String())
	} else {
		b.WriteString("# PrivateKey = <the private key that belongs to this config's public key>\n")
	}
	if len(c.Addresses) > 0 {
		fmt.Fprintf(&b, "Address = %s\n", joinPrefixes(c.Addresses))
	}
	if len(c.DNS) > 0 {
		fmt.Fprintf(&b, "DNS = %s\n", strings.Join(c.DNS, ", "))
	}
	b.WriteString("\n[Peer]\n")
	fmt.Fprintf(&b, "PublicKey = %s\n", c.ServerKey.String())
	if c.PresharedKey != nil {
		fmt.Fprintf(&b, "PresharedKey = %s\n", c.PresharedKey.String())
	}
	fmt.Fprintf(&b, "AllowedIPs = %s\n", joinPrefixes(c.AllowedIPs))
	if c.Endpoint != "" {
		fmt.Fprintf(&b, "Endpoint = %s\n", c.Endpoint)
	}
	if c.Keepalive > 0 {
		fmt.Fprintf(&b, "PersistentKeepalive = %d\n", int(c.Keepalive/time.Second))
	}
	return b.String()
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}
