// SPDX-License-Identifier: GPL-2.0
/*
 * kvmport: Linux port, module entry.
 *
 * Skeleton: registers the misc device /dev/kvmport (0660; the group comes
 * from the udev rule 99-kvmport.rules) and answers KVM_GET_API_VERSION.
 * OS-independent code will live in core/; this file stays a thin shim.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>

#include <kvmport/kvmport.h>

static long kvmport_dev_ioctl(struct file *filp, unsigned int ioctl,
			      unsigned long arg)
{
	switch (ioctl) {
	case KVMP_GET_API_VERSION:
		if (arg)
			return -EINVAL;
		return KVMP_API_VERSION;
	default:
		return -ENOTTY;
	}
}

static const struct file_operations kvmport_chardev_ops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = kvmport_dev_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice kvmport_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "kvmport",
	.fops = &kvmport_chardev_ops,
	.mode = 0660,
};

static int __init kvmport_init(void)
{
	int r;

	r = misc_register(&kvmport_dev);
	if (r) {
		pr_err("misc device register failed: %d\n", r);
		return r;
	}
	pr_info("loaded, API version %d\n", KVMP_API_VERSION);
	return 0;
}

static void __exit kvmport_exit(void)
{
	misc_deregister(&kvmport_dev);
	pr_info("unloaded\n");
}

module_init(kvmport_init);
module_exit(kvmport_exit);

MODULE_DESCRIPTION("kvmport: portable KVM-compatible hypervisor driver");
MODULE_LICENSE("GPL");
