// `/sign-in`: token sign-in.
import { SignInForm } from "@/components/auth/sign-in-form";

export default function SignInPage() {
  return <SignInForm />;
}
