module pesto/registration

go 1.26

require pesto/shared v0.0.0

replace pesto/shared => ../shared
