package address_test

import (
	"fmt"
	"strings"

	"pesto/registration/internal/address"
)

// An address is stored trimmed, its domain lower-cased and in ASCII; a
// display name, a zero-width character or more than 254 bytes is refused.
func ExampleParse() {
	for _, v := range []string{
		" Jürgen@BÜCHER.example ",
		"Jane <jane@example.com>",
		"ja\u200bne@example.com",
		strings.Repeat("a", 250) + "@example.com",
	} {
		a, err := address.Parse(v)
		fmt.Printf("%q %v\n", a, err)
	}
	// Output:
	// "Jürgen@xn--bcher-kva.example" <nil>
	// "" not a single email address without a display name
	// "" not a single email address without a display name
	// "" email address over 254 bytes
}
