package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// manyProfiles is a file with n profiles on one interface, each with its own
// /24 and /64: the overlap check compares every pair.
func manyProfiles(n int) []byte {
	var b strings.Builder
	b.WriteString(iface)
	for i := range n {
		fmt.Fprintf(&b, "[[profile]]\nid = \"p%d\"\ninterface = \"wg0\"\nipv4_range = \"10.%d.%d.0/24\"\nipv6_range = \"fd00:%x::/64\"\n",
			i, i/256, i%256, i)
	}
	return []byte(b.String())
}

func BenchmarkParseExample(b *testing.B) {
	data, err := os.ReadFile(filepath.Join("..", "examples", "wgkeeper.toml"))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := Parse(data, testDir); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseProfiles reports the cost of 1000 profiles against 10: the
// pairwise overlap check is quadratic, so the ratio shows whether it matters.
func BenchmarkParseProfiles(b *testing.B) {
	perProfile := map[int]time.Duration{}
	for _, n := range []int{10, 1000} {
		data := manyProfiles(n)
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			for b.Loop() {
				if _, err := Parse(data, testDir); err != nil {
					b.Fatal(err)
				}
			}
			if b.N > 0 {
				perProfile[n] = b.Elapsed() / time.Duration(b.N*n)
			}
		})
	}
	if perProfile[10] > 0 && perProfile[1000] > 0 {
		b.Logf("per profile: %v at 10, %v at 1000 (ratio %.1f)",
			perProfile[10], perProfile[1000], float64(perProfile[1000])/float64(perProfile[10]))
	}
}
