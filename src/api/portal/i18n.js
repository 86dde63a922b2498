// The portal's words in Chinese (the default) and English; the choice is kept in localStorage.

const WORDS = {
  zh: {
    skip: "跳到内容", logout: "退出登录", docs: "API 文档", other: "English",
    "nav.overview": "概览", "nav.usage": "用量", "nav.keys": "API 密钥", "nav.plans": "套餐",
    "nav.payments": "支付记录", "nav.account": "账户", "nav.admin": "管理",
    "login.title": "登录", "login.who": "用户名或邮箱", "login.password": "密码", "login.go": "登录",
    "login.signup": "注册新账户", "login.forgot": "忘记密码？",
    "signup.title": "注册", "signup.email": "邮箱", "signup.username": "用户名", "signup.password": "密码（8 到 100 个字符）",
    "signup.code": "邮箱验证码（需要时填写）", "signup.send": "发送验证码", "signup.go": "注册", "signup.sent": "验证码已发送",
    "signup.back": "已有账户？登录",
    "forgot.title": "重置密码", "forgot.email": "注册邮箱", "forgot.send": "发送重置验证码",
    "forgot.sent": "如果该邮箱已注册，验证码已发送", "forgot.code": "验证码", "forgot.new": "新密码", "forgot.go": "重置密码",
    "forgot.done": "密码已重置，请登录",
    "overview.title": "概览", "overview.plan": "当前套餐", "overview.until": "本期至", "overview.next": "之后",
    "overview.unlimited": "不限", "overview.resets": "重置于", "overview.upgrade": "升级套餐",
    "usage.title": "最近 30 天用量", "usage.charges": "扣费与退还", "usage.when": "时间", "usage.type": "类型",
    "usage.amount": "数量", "usage.state": "状态", "usage.endpoint": "接口", "usage.reason": "原因",
    "usage.committed": "已扣除", "usage.refunded": "已退还", "usage.none": "暂无记录",
    "keys.title": "API 密钥", "keys.name": "名称", "keys.create": "创建密钥", "keys.once": "请立即复制：此密钥只显示这一次。",
    "keys.copy": "复制", "keys.copied": "已复制", "keys.prefix": "前缀", "keys.created": "创建于", "keys.used": "最近使用",
    "keys.active": "有效", "keys.inactive": "已停用", "keys.deactivate": "停用", "keys.delete": "删除",
    "keys.confirm": "删除这个密钥？使用它的程序将无法再访问。", "keys.none": "还没有密钥",
    "plans.title": "套餐", "plans.per": { monthly: "/ 月", yearly: "/ 年", lifetime: "" }, "plans.current": "当前套餐",
    "plans.choose": "选择", "plans.method": "支付方式", "plans.pay": "去支付", "plans.scan": "扫码支付，或打开支付页面：",
    "plans.open": "打开支付页面", "plans.waiting": "等待支付完成…", "plans.paid": "支付成功，新额度已生效",
    "plans.quote": "应付", "plans.credit": "抵扣",
    "payments.title": "支付记录", "payments.order": "订单号", "payments.amount": "金额", "payments.method": "方式",
    "payments.status": "状态", "payments.when": "时间", "payments.none": "暂无支付记录",
    "account.title": "账户", "account.current": "当前密码", "account.new": "新密码", "account.change": "修改密码",
    "account.changed": "密码已修改，请重新登录",
    "admin.title": "管理", "admin.users": "用户", "admin.search": "搜索用户", "admin.disable": "停用", "admin.enable": "启用",
    "admin.grant": "增加额度", "admin.adjust": "设置上限", "admin.reset": "清零用量", "admin.amount": "数量",
    "admin.audit": "审计日志", "admin.action": "操作", "admin.target": "对象", "admin.done": "已完成",
    "admin.plans": "套餐", "admin.superuser": "管理员", "admin.price": "价格", "admin.save": "保存", "admin.retire": "下架",
    "admin.newplan": "新建套餐", "admin.name": "名称", "admin.cycle": "计费周期", "admin.create": "创建套餐",
    yes: "是", no: "否",
  },
  en: {
    skip: "Skip to content", logout: "Sign out", docs: "API docs", other: "中文",
    "nav.overview": "Overview", "nav.usage": "Usage", "nav.keys": "API keys", "nav.plans": "Plans",
    "nav.payments": "Payments", "nav.account": "Account", "nav.admin": "Admin",
    "login.title": "Sign in", "login.who": "Username or email", "login.password": "Password", "login.go": "Sign in",
    "login.signup": "Create an account", "login.forgot": "Forgot your password?",
    "signup.title": "Create an account", "signup.email": "Email", "signup.username": "Username", "signup.password": "Password (8 to 100 characters)",
    "signup.code": "Email code (when asked for)", "signup.send": "Send a code", "signup.go": "Create account", "signup.sent": "Code sent",
    "signup.back": "Have an account? Sign in",
    "forgot.title": "Reset your password", "forgot.email": "Your email", "forgot.send": "Send a reset code",
    "forgot.sent": "If an account has this address, a code is on its way", "forgot.code": "Code", "forgot.new": "New password", "forgot.go": "Reset password",
    "forgot.done": "Password reset: sign in with the new one",
    "overview.title": "Overview", "overview.plan": "Current plan", "overview.until": "Paid until", "overview.next": "then",
    "overview.unlimited": "unlimited", "overview.resets": "resets", "overview.upgrade": "Upgrade",
    "usage.title": "Usage, last 30 days", "usage.charges": "Charges and refunds", "usage.when": "When", "usage.type": "Type",
    "usage.amount": "Amount", "usage.state": "State", "usage.endpoint": "Endpoint", "usage.reason": "Reason",
    "usage.committed": "charged", "usage.refunded": "refunded", "usage.none": "Nothing yet",
    "keys.title": "API keys", "keys.name": "Name", "keys.create": "Create key", "keys.once": "Copy it now: this key is shown only once.",
    "keys.copy": "Copy", "keys.copied": "Copied", "keys.prefix": "Prefix", "keys.created": "Created", "keys.used": "Last used",
    "keys.active": "active", "keys.inactive": "deactivated", "keys.deactivate": "Deactivate", "keys.delete": "Delete",
    "keys.confirm": "Delete this key? Programs using it lose access.", "keys.none": "No keys yet",
    "plans.title": "Plans", "plans.per": { monthly: "/ month", yearly: "/ year", lifetime: "" }, "plans.current": "Your plan",
    "plans.choose": "Choose", "plans.method": "Pay with", "plans.pay": "Pay", "plans.scan": "Scan to pay, or open the payment page:",
    "plans.open": "Open the payment page", "plans.waiting": "Waiting for the payment…", "plans.paid": "Paid: your new quota is in place",
    "plans.quote": "To pay", "plans.credit": "credit",
    "payments.title": "Payments", "payments.order": "Order", "payments.amount": "Amount", "payments.method": "Method",
    "payments.status": "Status", "payments.when": "When", "payments.none": "No payments yet",
    "account.title": "Account", "account.current": "Current password", "account.new": "New password", "account.change": "Change password",
    "account.changed": "Password changed: sign in again",
    "admin.title": "Admin", "admin.users": "Users", "admin.search": "Search users", "admin.disable": "Disable", "admin.enable": "Enable",
    "admin.grant": "Grant", "admin.adjust": "Set limit", "admin.reset": "Reset usage", "admin.amount": "Amount",
    "admin.audit": "Audit log", "admin.action": "Action", "admin.target": "Target", "admin.done": "Done",
    "admin.plans": "Plans", "admin.superuser": "superuser", "admin.price": "Price", "admin.save": "Save", "admin.retire": "Retire",
    "admin.newplan": "New plan", "admin.name": "Name", "admin.cycle": "Billing cycle", "admin.create": "Create plan",
    yes: "yes", no: "no",
  },
};

export function lang() {
  return localStorage.getItem("idoctor.portal.lang") === "en" ? "en" : "zh";
}

export function setLang(l) {
  localStorage.setItem("idoctor.portal.lang", l);
  document.documentElement.lang = l === "en" ? "en" : "zh-CN";
}

/** The word for `key` in the chosen language (the key itself when none is known). */
export function t(key) {
  return WORDS[lang()][key] ?? WORDS.zh[key] ?? key;
}

/** Fills every element with a `data-t` attribute under `root`. */
export function translate(root = document) {
  for (const e of root.querySelectorAll("[data-t]")) e.textContent = t(e.dataset.t);
}
