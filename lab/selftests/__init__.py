"""Linux's KVM selftests against kvmport: build.py builds them (cached), run.py runs them
in the SVM lab on kvm_amd and on kvmport as /dev/kvm; 0*.patch are our changes to Linux's
test library, expected.txt the differences we expect, each with its reason."""
