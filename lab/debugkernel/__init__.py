"""The debug lab kernel (KASAN, KFENCE, lockdep, kmemleak): `invoke lab --kernel debug`."""
