module pesto/deploy

go 1.26

require (
	github.com/compose-spec/compose-go/v2 v2.16.2 // indirect
	pesto/shared v0.0.0
)

replace pesto/shared => ../shared
